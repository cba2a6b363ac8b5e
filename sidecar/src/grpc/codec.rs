//! The protobuf codec of every service of the contract: tonic-prost's, except that a
//! request message that does not decode is the client's fault.
//!
//! `tonic_prost::ProstCodec` answers a message that fails to decode (invalid UTF-8 in a
//! string field, a truncated varint, a wrong wire type) with INTERNAL, following gRPC's
//! status-code guide for a parse failure. Our contract (`common.proto`) reserves
//! INTERNAL for server bugs and calls a malformed request INVALID_ARGUMENT, so this codec
//! wraps the prost decoder and maps its errors. `build.rs` names it with tonic-prost-build's
//! `codec_path`; health and reflection keep their own codec.
//!
//! The generated clients (tests, `pickline bench grpc`) use the same codec, so for them a
//! response that does not decode reads INVALID_ARGUMENT too.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Code, Status,
    codec::{BufferSettings, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt as _};

/// `tonic_prost::ProstCodec` with decode errors mapped to INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec {
            _messages: PhantomData,
        }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
    }
}

/// The prost decoder, answering INVALID_ARGUMENT for bytes that are not a `U`.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(malformed)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// INVALID_ARGUMENT with a BadRequest naming the whole message, keeping prost's
/// description (which names the message and field that failed).
fn malformed(decode_error: Status) -> Status {
    // The prost decoder has no other error than a failed decode; anything else is kept.
    if decode_error.code() != Code::Internal {
        return decode_error;
    }
    let reason = decode_error.message().to_owned();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("malformed request message: {reason}"),
        ErrorDetails::with_bad_request(vec![FieldViolation::new("request", reason)]),
    )
}
