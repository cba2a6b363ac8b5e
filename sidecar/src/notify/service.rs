//! `pickline.v1.NotifyService`: the dead-letter list over gRPC. The admission layer of
//! `server.rs` has already authenticated the caller and checked the `admin` scope
//! (`grpc/rpc.rs` rows); this handler converts, calls [`NotifyHandle`], and maps its
//! errors:
//!
//! | error | status |
//! |---|---|
//! | key that does not parse | INVALID_ARGUMENT |
//! | key not on the list | NOT_FOUND |
//! | `[notify]` not enabled (or not started) | FAILED_PRECONDITION |
//! | journal write failed | UNAVAILABLE (retry) |

use tonic::{Request, Response, Status};

use super::{
    MsgKey,
    runner::{DeadLetter, NotifyError, NotifyHandle},
};
use crate::pb::{self, notify_service_server::NotifyService};

/// The NotifyService handler.
#[derive(Clone, Debug)]
pub struct Notifications {
    handle: NotifyHandle,
}

impl Notifications {
    /// A handler over the notifier `handle` (filled once the notifier starts).
    pub fn new(handle: NotifyHandle) -> Notifications {
        Notifications { handle }
    }
}

fn status(e: NotifyError) -> Status {
    match e {
        NotifyError::Disabled => Status::failed_precondition(e.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}

fn key(field: &str, s: &str) -> Result<MsgKey, Status> {
    s.parse()
        .map_err(|e: String| Status::invalid_argument(format!("{field}: {e}")))
}

fn letter_pb(d: DeadLetter) -> pb::NotifyDeadLetter {
    pb::NotifyDeadLetter {
        key: d.key.to_string(),
        order_id: d.key.order_id().to_string(),
        kind: d.key.kind.as_str().to_owned(),
        channel: d.key.channel.as_str().to_owned(),
        attempts: d.attempts,
        error: d.error,
        dead_at_ms: d.dead_at_ms,
        locale: d.locale,
    }
}

#[tonic::async_trait]
impl NotifyService for Notifications {
    async fn list_dead_letters(
        &self,
        _request: Request<pb::ListNotifyDeadLettersRequest>,
    ) -> Result<Response<pb::ListNotifyDeadLettersResponse>, Status> {
        let list = self.handle.dead_letters().map_err(status)?;
        Ok(Response::new(pb::ListNotifyDeadLettersResponse {
            dead_letters: list.into_iter().map(letter_pb).collect(),
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<pb::GetNotifyDeadLetterRequest>,
    ) -> Result<Response<pb::GetNotifyDeadLetterResponse>, Status> {
        let k = key("key", &request.get_ref().key)?;
        let d = self
            .handle
            .dead_letter(&k)
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("{k} is not on the dead-letter list")))?;
        let (subject, text, html, sms, render_error) = match d.rendered {
            Ok(r) => (r.subject, r.text, r.html, r.sms, String::new()),
            Err(e) => (
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                e,
            ),
        };
        Ok(Response::new(pb::GetNotifyDeadLetterResponse {
            dead_letter: Some(letter_pb(d.letter)),
            to_masked: d.to_masked,
            subject,
            text,
            html,
            sms,
            render_error,
        }))
    }

    async fn replay_dead_letter(
        &self,
        request: Request<pb::ReplayNotifyDeadLetterRequest>,
    ) -> Result<Response<pb::ReplayNotifyDeadLetterResponse>, Status> {
        let k = key("key", &request.get_ref().key)?;
        let replayed = self.handle.replay(&k).map_err(status)?;
        Ok(Response::new(pb::ReplayNotifyDeadLetterResponse {
            replayed,
        }))
    }
}
