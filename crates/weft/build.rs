//! Generates the demo `books` gRPC service code (client and server) without protoc: the
//! messages are hand-written `prost::Message` structs in `src/demo/books.rs`, and
//! `tonic_build::manual` only emits the service plumbing around them.

fn main() {
    let codec = "tonic_prost::ProstCodec";
    let books = tonic_build::manual::Service::builder()
        .name("Books")
        .package("weft.demo")
        .comment("The demo book catalogue.")
        .method(
            tonic_build::manual::Method::builder()
                .name("get")
                .route_name("Get")
                .comment("Returns one book by id.")
                .input_type("crate::demo::books::GetBookRequest")
                .output_type("crate::demo::books::Book")
                .codec_path(codec)
                .build(),
        )
        .method(
            tonic_build::manual::Method::builder()
                .name("list")
                .route_name("List")
                .comment("Streams every book, one message per book.")
                .input_type("crate::demo::books::ListBooksRequest")
                .output_type("crate::demo::books::Book")
                .codec_path(codec)
                .server_streaming()
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new().compile(&[books]);
    println!("cargo:rerun-if-changed=build.rs");
}
