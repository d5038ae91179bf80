// A `User` is a resource, not an event: it has no routing key, so it cannot be staged.
use shop_proto::user::v1::User;
use shop_shared::messaging::{EventContext, stage};

async fn publish_user(conn: &mut sqlx::PgConnection) {
    let _ = stage(conn, &User::default(), &EventContext::new_flow()).await;
}

fn main() {
    let _ = publish_user;
}
