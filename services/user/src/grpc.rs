//! The tonic `UserService`: proto → domain, the use case in [`crate::users`], domain → proto.

use shop_proto::user::v1::user_service_server::UserService;
use shop_proto::user::v1::{
    CreateUserRequest, CreateUserResponse, GetUserRequest, GetUserResponse, LoginRequest,
    LoginResponse, UpdateUserRequest, UpdateUserResponse, User,
};
use shop_shared::auth::caller;
use shop_shared::time::timestamp;
use tonic::{Request, Response, Status};

use shop_shared::ids::UserId;

use crate::domain::{Credentials, NewUser, UserPatch};
use crate::repository::UserRow;
use crate::users::Users;

/// The calls that need no token (docs/contract.md): signing up and logging in.
pub(crate) const PUBLIC_METHODS: &[&str] = &[
    "/shop.user.v1.UserService/CreateUser",
    "/shop.user.v1.UserService/Login",
];

/// The gRPC face of the user service.
#[derive(Debug, Clone)]
pub(crate) struct UserGrpc {
    pub(crate) users: Users,
}

#[tonic::async_trait]
impl UserService for UserGrpc {
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let context = shop_shared::grpc::event_context(&request);
        let new = NewUser::try_from(request.into_inner())?;
        let user = self.users.register(new, &context).await?;
        Ok(Response::new(CreateUserResponse {
            user: Some(to_proto(&user)),
        }))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let credentials = Credentials::try_from(request.into_inner())?;
        let done = self.users.login(credentials).await?;
        Ok(Response::new(LoginResponse {
            access_token: done.access_token,
            expires_in_seconds: done.expires_in_seconds,
            user: Some(to_proto(&done.user)),
        }))
    }

    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let caller = caller(&request)?;
        let user_id = UserId::parse(&request.get_ref().user_id)?;
        let user = self.users.get(&caller, user_id).await?;
        Ok(Response::new(GetUserResponse {
            user: Some(to_proto(&user)),
        }))
    }

    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let caller = caller(&request)?;
        let context = shop_shared::grpc::event_context(&request);
        let patch = UserPatch::try_from(request.into_inner())?;
        let user = self.users.update(&caller, patch, &context).await?;
        Ok(Response::new(UpdateUserResponse {
            user: Some(to_proto(&user)),
        }))
    }
}

fn to_proto(user: &UserRow) -> User {
    User {
        user_id: user.user_id.to_string(),
        email: user.email.as_str().to_owned(),
        name: user.name.as_str().to_owned(),
        create_time: Some(timestamp(user.created_at)),
    }
}
