// A request message is not an event: no queue can be bound for it, so no handler registers.
use std::sync::Arc;

use shop_proto::order::v1::CreateOrderRequest;
use shop_shared::messaging::{Handle, HandlerContext, HandlerError, Subscriptions};

struct Sneaky;

#[async_trait::async_trait]
impl Handle<CreateOrderRequest> for Sneaky {
    async fn handle(
        &self,
        _event: &CreateOrderRequest,
        _cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {
    let _ = Subscriptions::new().on::<CreateOrderRequest, _>(Arc::new(Sneaky));
}
