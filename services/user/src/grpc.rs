//! The tonic `UserService`: request → domain → repository/outbox → response.

use shop_proto::user::v1::user_service_server::UserService;
use shop_proto::user::v1::{
    CreateUserRequest, CreateUserResponse, GetUserRequest, GetUserResponse, UpdateUserRequest,
    UpdateUserResponse, User,
};
use shop_shared::messaging::{OutboxWaker, outbox};
use shop_shared::time::{now, timestamp};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::UserError;
use crate::config::PasswordHashing;
use crate::domain::{NewUser, UserPatch, parse_user_id};
use crate::events::{user_created, user_updated};
use crate::repository::{self, UserRow};

/// The gRPC face of the user service.
#[derive(Debug, Clone)]
pub(crate) struct UserGrpc {
    pub(crate) pool: PgPool,
    /// Wakes this process's outbox relay after a commit that staged events.
    pub(crate) waker: OutboxWaker,
    pub(crate) hashing: PasswordHashing,
}

#[tonic::async_trait]
impl UserService for UserGrpc {
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let context = shop_shared::grpc::event_context(&request);
        let new = NewUser::try_from(request.into_inner())?;
        let cost = self.hashing;
        // argon2id is deliberately slow: keep it off the async workers.
        let hash = tokio::task::spawn_blocking(move || {
            let hash = new.password.hash(cost);
            (new.email, new.name, hash)
        })
        .await
        .map_err(|e| UserError::Unexpected(e.into()))?;
        let (email, name, hash) = hash;
        let hash = hash.map_err(UserError::Unexpected)?;

        let user = UserRow {
            user_id: Uuid::now_v7(),
            email: email.as_str().to_owned(),
            name: name.as_str().to_owned(),
            created_at: now(),
        };
        let mut tx = self.pool.begin().await.map_err(UserError::from)?;
        repository::insert_user(&mut tx, &user, &hash).await?;
        // Same transaction: the user exists if and only if user.created will be published.
        outbox::stage(&mut tx, &user_created(&user), &context)
            .await
            .map_err(UserError::from)?;
        tx.commit().await.map_err(UserError::from)?;
        self.waker.wake();
        tracing::info!(user_id = %user.user_id, "user created");
        Ok(Response::new(CreateUserResponse {
            user: Some(to_proto(&user)),
        }))
    }

    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let user_id = parse_user_id(&request.get_ref().user_id)?;
        let mut conn = self.pool.acquire().await.map_err(UserError::from)?;
        let user = repository::find_user(&mut conn, user_id)
            .await
            .map_err(UserError::from)?
            .ok_or(UserError::NotFound)?;
        Ok(Response::new(GetUserResponse {
            user: Some(to_proto(&user)),
        }))
    }

    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let context = shop_shared::grpc::event_context(&request);
        let patch = UserPatch::try_from(request.into_inner())?;
        let mut tx = self.pool.begin().await.map_err(UserError::from)?;
        let mut user = repository::lock_user(&mut tx, patch.user_id)
            .await
            .map_err(UserError::from)?
            .ok_or(UserError::NotFound)?;
        let email_changed = patch
            .email
            .as_ref()
            .is_some_and(|e| e.as_str() != user.email);
        let name_changed = patch.name.as_ref().is_some_and(|n| n.as_str() != user.name);
        if let Some(email) = patch.email.filter(|_| email_changed) {
            user.email = email.as_str().to_owned();
        }
        if let Some(name) = patch.name.filter(|_| name_changed) {
            user.name = name.as_str().to_owned();
        }
        if email_changed || name_changed {
            let now = now();
            repository::update_user(&mut tx, &user, now).await?;
            let event = user_updated(&user, email_changed, name_changed, now);
            outbox::stage(&mut tx, &event, &context)
                .await
                .map_err(UserError::from)?;
        }
        tx.commit().await.map_err(UserError::from)?;
        self.waker.wake();
        Ok(Response::new(UpdateUserResponse {
            user: Some(to_proto(&user)),
        }))
    }
}

fn to_proto(user: &UserRow) -> User {
    User {
        user_id: user.user_id.to_string(),
        email: user.email.clone(),
        name: user.name.clone(),
        create_time: Some(timestamp(user.created_at)),
    }
}
