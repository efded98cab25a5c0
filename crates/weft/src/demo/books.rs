//! The demo `books` gRPC service: its messages (hand-written prost structs, no `.proto`), the
//! generated client/server plumbing from `build.rs`, and the server implementation.

use std::pin::Pin;

use futures_util::Stream;
use tonic::{Request, Response, Status};

/// `Get` request: which book.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetBookRequest {
    #[prost(uint32, tag = "1")]
    pub id: u32,
}

/// `List` request: at most `limit` books (0 = all).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListBooksRequest {
    #[prost(uint32, tag = "1")]
    pub limit: u32,
}

/// One book of the catalogue.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct Book {
    #[prost(uint32, tag = "1")]
    pub id: u32,
    #[prost(string, tag = "2")]
    pub title: String,
    #[prost(string, tag = "3")]
    pub author: String,
}

// The generated code names these modules `books_client` / `books_server`.
include!(concat!(env!("OUT_DIR"), "/weft.demo.Books.rs"));

pub use books_client::BooksClient;
pub use books_server::{Books, BooksServer};

const CATALOGUE: &[(&str, &str)] = &[
    ("A Wizard of Earthsea", "Ursula K. Le Guin"),
    ("The Left Hand of Darkness", "Ursula K. Le Guin"),
    ("Kindred", "Octavia E. Butler"),
    ("Solaris", "Stanisław Lem"),
    ("Invisible Cities", "Italo Calvino"),
    ("The Dispossessed", "Ursula K. Le Guin"),
    ("Piranesi", "Susanna Clarke"),
    ("Roadside Picnic", "Arkady and Boris Strugatsky"),
];

/// Number of books in the catalogue; ids are `1..=COUNT`.
pub const COUNT: u32 = CATALOGUE.len() as u32;

fn book(id: u32) -> Option<Book> {
    let index = usize::try_from(id.checked_sub(1)?).ok()?;
    let (title, author) = CATALOGUE.get(index)?;
    Some(Book {
        id,
        title: (*title).to_string(),
        author: (*author).to_string(),
    })
}

/// The in-memory catalogue served over gRPC.
#[derive(Debug, Default, Clone)]
pub struct Catalogue;

#[tonic::async_trait]
impl Books for Catalogue {
    async fn get(&self, request: Request<GetBookRequest>) -> Result<Response<Book>, Status> {
        let id = request.into_inner().id;
        book(id)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no book with id {id}")))
    }

    type ListStream = Pin<Box<dyn Stream<Item = Result<Book, Status>> + Send + 'static>>;

    async fn list(
        &self,
        request: Request<ListBooksRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let limit = match request.into_inner().limit {
            0 => COUNT,
            n => n.min(COUNT),
        };
        let books = (1..=limit).filter_map(book).map(Ok);
        Ok(Response::new(Box::pin(futures_util::stream::iter(books))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_at_one_and_stop_at_count() {
        assert!(book(0).is_none());
        assert_eq!(book(1).map(|b| b.id), Some(1));
        assert!(book(COUNT).is_some());
        assert!(book(COUNT + 1).is_none());
    }

    #[tokio::test]
    async fn list_streams_at_most_limit_books() {
        use futures_util::StreamExt;
        let response = Catalogue
            .list(Request::new(ListBooksRequest { limit: 3 }))
            .await
            .expect("list");
        let ids: Vec<u32> = response
            .into_inner()
            .map(|b| b.expect("book").id)
            .collect()
            .await;
        assert_eq!(ids, vec![1, 2, 3]);
    }
}
