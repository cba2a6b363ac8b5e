//! `pickline.v1.AdminService` handlers.

use tonic::{Request, Response, Status};

use crate::pb::{
    PingRequest, PingResponse, SnapshotRequest, SnapshotResponse, StatsRequest, StatsResponse,
    admin_service_server::AdminService,
};

/// The AdminService handler. Ping needs nothing; Snapshot and Stats need the engine and
/// answer UNIMPLEMENTED until it is wired (never made-up numbers).
#[derive(Clone, Copy, Debug, Default)]
pub struct Admin;

#[tonic::async_trait]
impl AdminService for Admin {
    async fn ping(&self, _request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(Response::new(PingResponse {}))
    }

    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        Err(Status::unimplemented(
            "AdminService.Snapshot is wired when the engine API lands",
        ))
    }

    async fn stats(
        &self,
        _request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        Err(Status::unimplemented(
            "AdminService.Stats is wired when the engine API lands",
        ))
    }
}
