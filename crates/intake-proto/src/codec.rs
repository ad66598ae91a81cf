//! The codec of the public services (`intake.v1`): tonic-prost's, except for
//! what a body that does not decode is called.
//!
//! tonic-prost answers any decode failure with INTERNAL, which tells a client
//! the server broke. A request body that is not a valid message (invalid
//! UTF-8 in a string, a wrong wire type, garbage) is the caller's mistake and
//! must be INVALID_ARGUMENT, like any other bad input. A *response* that does
//! not decode, on the other hand, is the server's fault as the client sees it,
//! so it stays INTERNAL. The internal Raft transport and `dispatch.v1` keep
//! tonic-prost's codec: this one is configured for the public services only
//! (`build.rs`).

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

use crate::intake::v1 as pb;

/// Which side of a call a message travels on, and so whose fault it is when
/// its bytes do not decode.
pub trait WireMessage {
    /// The message's protobuf name, for the error.
    const NAME: &'static str;
    /// True for a request: a server decodes it from a client.
    const IS_REQUEST: bool;
}

/// The status for `M`'s bytes failing to decode.
pub fn decode_failure<M: WireMessage>(e: &prost::DecodeError) -> Status {
    if M::IS_REQUEST {
        Status::invalid_argument(format!("request body is not a valid {}: {e}", M::NAME))
    } else {
        Status::internal(format!("response body is not a valid {}: {e}", M::NAME))
    }
}

macro_rules! wire_messages {
    ($request:expr => $($t:ident),+ $(,)?) => {
        $(impl WireMessage for pb::$t {
            const NAME: &'static str = concat!("intake.v1.", stringify!($t));
            const IS_REQUEST: bool = $request;
        })+
    };
}

wire_messages!(true => SubmitRequest, SubmitBatchRequest, GetTicketRequest, UpdateStatusRequest, ClusterStatusRequest, WatchAlertsRequest, RemoveNodeRequest);
wire_messages!(false => SubmitResponse, SubmitBatchResponse, GetTicketResponse, UpdateStatusResponse, ClusterStatusResponse, AlertEvent, RemoveNodeResponse);

/// tonic-prost's encoder, and a decoder that reports failures by
/// [`decode_failure`]. The generated code builds it with `default()`.
#[derive(Debug)]
pub struct PublicCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for PublicCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for PublicCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + WireMessage + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = PublicDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        PublicDecoder(PhantomData)
    }
}

#[derive(Debug)]
pub struct PublicDecoder<U>(PhantomData<U>);

impl<U: Message + Default + WireMessage> Decoder for PublicDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| decode_failure::<U>(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_bad_request_is_the_callers_fault_and_a_bad_response_the_servers() {
        // Field 1 (ticket_id, a string) holding 0xFF: not UTF-8.
        let bytes = [0x0a, 0x01, 0xff];
        let e = pb::GetTicketRequest::decode(&bytes[..]).expect_err("invalid UTF-8");
        let s = decode_failure::<pb::GetTicketRequest>(&e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(
            s.message()
                .starts_with("request body is not a valid intake.v1.GetTicketRequest: "),
            "{}",
            s.message()
        );
        let e = pb::GetTicketResponse::decode(&[0x0a, 0x05][..]).expect_err("truncated");
        assert_eq!(decode_failure::<pb::GetTicketResponse>(&e).code(), Code::Internal);
    }
}
