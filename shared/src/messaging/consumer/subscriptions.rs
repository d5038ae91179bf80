//! The handlers a service registers, one per event type: their routing keys (the queue's
//! bindings, never typed twice), their types erased for the engine, and the batch state they
//! share.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use shop_proto::Event;
use sqlx::PgConnection;

use crate::messaging::envelope::{self, DecodeError, Envelope, IncomingMeta};

use super::{BatchState, BatchView, Handle, HandlerContext, HandlerError};

/// The parts of a [`HandlerContext`] before its state is given its type.
pub(super) struct Parts<'c> {
    pub(super) conn: &'c mut PgConnection,
    pub(super) meta: &'c IncomingMeta,
    pub(super) staged: &'c mut Vec<Envelope>,
    pub(super) counted: &'c mut Vec<&'static str>,
}

/// A handler with its event and state types erased, so handlers of many types share one
/// table. The state a handler gets is always the one its [`Subscriptions`] loads: both types
/// are fixed together by [`StatefulSubscriptions::on`], so the downcasts cannot fail.
#[async_trait::async_trait]
pub(super) trait ErasedHandler: Send + Sync {
    fn decode(&self, body: &[u8]) -> Result<Box<dyn Any + Send + Sync>, DecodeError>;
    async fn handle(
        &self,
        event: &(dyn Any + Send + Sync),
        state: &mut (dyn Any + Send + Sync),
        parts: Parts<'_>,
    ) -> Result<(), HandlerError>;
}

pub(super) struct Typed<E, H, S> {
    pub(super) handler: Arc<H>,
    pub(super) _types: std::marker::PhantomData<fn() -> (E, S)>,
}

#[async_trait::async_trait]
impl<E: Event, S: BatchState, H: Handle<E, S>> ErasedHandler for Typed<E, H, S> {
    fn decode(&self, body: &[u8]) -> Result<Box<dyn Any + Send + Sync>, DecodeError> {
        Ok(Box::new(envelope::decode_body::<E>(body)?))
    }

    async fn handle(
        &self,
        event: &(dyn Any + Send + Sync),
        state: &mut (dyn Any + Send + Sync),
        parts: Parts<'_>,
    ) -> Result<(), HandlerError> {
        let event = event
            .downcast_ref::<E>()
            .ok_or_else(|| HandlerError::permanent("decoded event has the wrong type"))?;
        let state = state
            .downcast_mut::<S>()
            .ok_or_else(|| HandlerError::permanent("batch state has the wrong type"))?;
        let mut cx = HandlerContext {
            conn: parts.conn,
            meta: parts.meta,
            staged: parts.staged,
            counted: parts.counted,
            state,
        };
        self.handler.handle(event, &mut cx).await
    }
}

/// A [`BatchState`] with its type erased, beside the handlers that use it.
#[async_trait::async_trait]
pub(super) trait ErasedState: Send + Sync {
    async fn load(
        &self,
        conn: &mut PgConnection,
        batch: &BatchView<'_>,
    ) -> Result<Box<dyn Any + Send + Sync>, HandlerError>;
    async fn store(
        &self,
        conn: &mut PgConnection,
        state: Box<dyn Any + Send + Sync>,
    ) -> Result<(), HandlerError>;
}

pub(super) struct StateOf<S>(std::marker::PhantomData<fn() -> S>);

#[async_trait::async_trait]
impl<S: BatchState> ErasedState for StateOf<S> {
    async fn load(
        &self,
        conn: &mut PgConnection,
        batch: &BatchView<'_>,
    ) -> Result<Box<dyn Any + Send + Sync>, HandlerError> {
        Ok(Box::new(S::load(conn, batch).await?))
    }

    async fn store(
        &self,
        conn: &mut PgConnection,
        state: Box<dyn Any + Send + Sync>,
    ) -> Result<(), HandlerError> {
        let state = state
            .downcast::<S>()
            .map_err(|_| HandlerError::permanent("batch state has the wrong type"))?;
        state.store(conn).await
    }
}

/// The event types a service consumes, each with its handler, and the state their batches
/// load ([`Subscriptions::with_state`]).
pub struct Subscriptions {
    pub(super) handlers: HashMap<&'static str, (&'static str, Arc<dyn ErasedHandler>)>,
    pub(super) state: Arc<dyn ErasedState>,
    /// Routing keys the service consumed before and no longer does (an event's old shape).
    moved_from: Vec<&'static str>,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Self {
            handlers: HashMap::new(),
            state: Arc::new(StateOf::<()>(std::marker::PhantomData)),
            moved_from: Vec::new(),
        }
    }
}

/// [`Subscriptions`] whose handlers decide on a state `S` their batch loads and stores.
pub struct StatefulSubscriptions<S> {
    subscriptions: Subscriptions,
    _state: std::marker::PhantomData<fn() -> S>,
}

impl<S> std::fmt::Debug for StatefulSubscriptions<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.subscriptions.fmt(f)
    }
}

impl<S: BatchState> StatefulSubscriptions<S> {
    /// Handles events of type `E` with `handler`, on the batch's `S`; the queue is bound to
    /// `E::ROUTING_KEY`.
    pub fn on<E: Event, H: Handle<E, S>>(mut self, handler: Arc<H>) -> Self {
        self.subscriptions = self.subscriptions.register::<E, H, S>(handler);
        self
    }

    /// See [`Subscriptions::moved_from`].
    pub fn moved_from(mut self, routing_key: &'static str) -> Self {
        self.subscriptions = self.subscriptions.moved_from(routing_key);
        self
    }
}

impl<S> From<StatefulSubscriptions<S>> for Subscriptions {
    fn from(stateful: StatefulSubscriptions<S>) -> Self {
        stateful.subscriptions
    }
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.handlers.keys()).finish()
    }
}

impl Subscriptions {
    /// No subscriptions yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles events of type `E` with `handler`; the queue is bound to `E::ROUTING_KEY`.
    ///
    /// Only an [`Event`] can be subscribed to: a request message has no routing key, so no
    /// queue could be bound for it, and registering a handler for one does not compile.
    ///
    /// ```compile_fail,E0277
    /// use std::sync::Arc;
    ///
    /// use shop_proto::order::v1::CreateOrderRequest;
    /// use shop_shared::messaging::{Handle, HandlerContext, HandlerError, Subscriptions};
    ///
    /// struct Sneaky;
    ///
    /// #[async_trait::async_trait]
    /// impl Handle<CreateOrderRequest> for Sneaky {
    ///     async fn handle(
    ///         &self,
    ///         _event: &CreateOrderRequest,
    ///         _cx: &mut HandlerContext<'_>,
    ///     ) -> Result<(), HandlerError> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let _ = Subscriptions::new().on::<CreateOrderRequest, _>(Arc::new(Sneaky));
    /// ```
    pub fn on<E: Event, H: Handle<E>>(self, handler: Arc<H>) -> Self {
        self.register::<E, H, ()>(handler)
    }

    /// Subscriptions whose handlers decide on a state `S` that each batch loads before its
    /// first message and stores after its last (see [`BatchState`]).
    pub fn with_state<S: BatchState>() -> StatefulSubscriptions<S> {
        StatefulSubscriptions {
            subscriptions: Self {
                state: Arc::new(StateOf::<S>(std::marker::PhantomData)),
                ..Self::default()
            },
            _state: std::marker::PhantomData,
        }
    }

    fn register<E: Event, H: Handle<E, S>, S: BatchState>(mut self, handler: Arc<H>) -> Self {
        let erased: Arc<dyn ErasedHandler> = Arc::new(Typed::<E, H, S> {
            handler,
            _types: std::marker::PhantomData,
        });
        self.handlers.insert(E::TYPE_NAME, (E::ROUTING_KEY, erased));
        self
    }

    /// The service consumed `routing_key` before and consumes a newer shape of that event now
    /// (e.g. `user.created` → `user.created.v2`): its queue is unbound from the old key at
    /// start-up, so a queue an earlier version declared stops receiving the old shape (whose
    /// type has no handler any more and would be dead-lettered).
    pub fn moved_from(mut self, routing_key: &'static str) -> Self {
        self.moved_from.push(routing_key);
        self
    }

    /// The routing keys to unbind (see [`Subscriptions::moved_from`]).
    pub fn moved_from_keys(&self) -> &[&'static str] {
        &self.moved_from
    }

    /// The routing keys to bind, derived from the handlers.
    pub fn routing_keys(&self) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = self.handlers.values().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys
    }

    /// Whether nothing is subscribed.
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// `routing_key` as a metric label: one of the subscribed keys, or `other`. A delivery's
    /// key (and its `x-original-routing-key` header) is chosen by whoever published it, and a
    /// label from outside would let a publisher grow `/metrics` without bound.
    pub fn metric_key<'a>(&self, routing_key: &'a str) -> &'a str {
        if self.handlers.values().any(|(key, _)| *key == routing_key) {
            routing_key
        } else {
            OTHER_LABEL
        }
    }
}

/// The metric label of a routing key the consumer does not subscribe to.
pub const OTHER_LABEL: &str = "other";
