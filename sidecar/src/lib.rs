pub mod pb {
    tonic::include_proto!("pickline.v1");
}
