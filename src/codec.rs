//! The gRPC codec of every shop service and client: prost's encoding, with one difference. A
//! request body that is not a valid protobuf message (random bytes, invalid UTF-8 in a string
//! field) is the caller's mistake, so it is INVALID_ARGUMENT with a message saying so, where
//! prost's codec reports INTERNAL.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstCodec;

/// prost's encoder and a decoder whose errors are INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct ShopCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ShopCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ShopCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = ShopDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ShopDecoder(PhantomData)
    }
}

/// Decodes a protobuf message; a malformed one is INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct ShopDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for ShopDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            Status::invalid_argument(format!("the message is not valid protobuf: {e}"))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
