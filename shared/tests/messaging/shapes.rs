//! One event in two shapes (a v1 beside its v2): staged by one call, published with one
//! message id, applied once by a consumer bound to both.

use std::sync::Arc;

use shop_proto::Event as _;
use shop_proto::user::{v1, v2};
use shop_shared::messaging::{
    Consumer, EventContext, Handle, HandlerContext, HandlerError, Retired, Shapes, Subscriptions,
    outbox,
};
use shop_shared::testing::{EventProbe, eventually};

use crate::helpers::{Harness, SERVICE, WAIT, fast_config};

/// Records which shape of a sign-up it applied, as an `effects` row (user id, type).
#[derive(Debug)]
struct ShapeRecorder;

#[async_trait::async_trait]
impl Handle<v1::UserCreated> for ShapeRecorder {
    async fn handle(
        &self,
        event: &v1::UserCreated,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        record(cx, &event.user_id, v1::UserCreated::TYPE_NAME).await
    }
}

#[async_trait::async_trait]
impl Handle<v2::UserCreated> for ShapeRecorder {
    async fn handle(
        &self,
        event: &v2::UserCreated,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        record(cx, &event.user_id, v2::UserCreated::TYPE_NAME).await
    }
}

async fn record(
    cx: &mut HandlerContext<'_>,
    user_id: &str,
    shape: &str,
) -> Result<(), HandlerError> {
    sqlx::query("INSERT INTO effects (order_id, message_id) VALUES ($1, $2)")
        .bind(user_id)
        .bind(shape)
        .execute(cx.conn())
        .await?;
    Ok(())
}

fn sign_up(user_id: &str) -> Shapes {
    let v1 = v1::UserCreated {
        user_id: user_id.into(),
        name: "Ada Lovelace".into(),
        ..Default::default()
    };
    let v2 = v2::UserCreated {
        user_id: user_id.into(),
        name: Some(v2::PersonName {
            display_name: "Ada Lovelace".into(),
            given_name: "Ada".into(),
            family_name: "Lovelace".into(),
        }),
        ..Default::default()
    };
    Shapes::of(
        &v1,
        &EventContext::with_correlation_id(format!("corr-{user_id}")),
    )
    .and(&v2)
}

#[tokio::test]
async fn both_shapes_go_out_with_one_id_and_a_consumer_bound_to_both_applies_the_event_once() {
    // Arrange: a consumer of both shapes, and a probe of both keys.
    let mut h = Harness::idle(fast_config()).await;
    let consumer = Consumer::new(
        h.pool.clone(),
        h.links.consume.clone(),
        h.broker.names.clone(),
        SERVICE,
        Subscriptions::new()
            .on::<v1::UserCreated, _>(Arc::new(ShapeRecorder))
            .on::<v2::UserCreated, _>(Arc::new(ShapeRecorder)),
        h.config.clone(),
    );
    h.spawn_consumer(consumer).await;
    let mut probe = EventProbe::bind(&h.broker, &["user.created", "user.created.v2"]).await;
    h.spawn_relay();

    // Act: one sign-up in two shapes, then a later one as a marker.
    for user in ["u-1", "marker"] {
        let mut tx = h.pool.begin().await.unwrap();
        outbox::stage_shapes(&mut tx, sign_up(user), &Retired::default())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    // Assert: the wire has both shapes of u-1 under one message id…
    let first = probe.expect(WAIT, "user.created").await;
    let second = probe.expect(WAIT, "user.created.v2").await;
    assert_eq!(first.routing_key, "user.created");
    assert_eq!(second.routing_key, "user.created.v2");
    assert_eq!(first.meta().message_id, second.meta().message_id);
    assert_eq!(first.meta().correlation_id, "corr-u-1");
    assert_eq!(first.decode::<v1::UserCreated>().user_id, "u-1");
    let v2 = second.decode::<v2::UserCreated>();
    assert_eq!(v2.name.unwrap().given_name, "Ada");
    // …and once the marker is applied, u-1 was applied exactly once (the second shape was a
    // duplicate for the inbox).
    eventually(WAIT, "the marker applied", || async {
        (h.effects("marker").await == 1).then_some(())
    })
    .await;
    assert_eq!(h.effects("u-1").await, 1);
    assert_eq!(h.effects("marker").await, 1);
    h.stop().await;
}

#[tokio::test]
async fn a_retired_shape_is_not_staged_and_the_newest_still_is() {
    // Arrange
    let h = Harness::idle(fast_config()).await;
    let retired = Retired::parse("user.created").unwrap();

    // Act
    let mut tx = h.pool.begin().await.unwrap();
    let id = outbox::stage_shapes(&mut tx, sign_up("u-2"), &retired)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Assert
    let rows: Vec<(String, uuid::Uuid, Option<String>)> =
        sqlx::query_as("SELECT routing_key, message_id, subject FROM outbox ORDER BY id")
            .fetch_all(&h.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![(
            "user.created.v2".to_owned(),
            id.as_uuid(),
            Some("u-2".to_owned())
        )]
    );
    h.stop().await;
}
