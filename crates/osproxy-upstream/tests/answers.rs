//! How much of a cluster's answer is read whole, by what it answers. A
//! unit test of `read_answer` alone, with a generated body: a real cluster
//! asked for a 150 MiB bulk answer (updates that ask for `_source` back)
//! would need a heap the test node does not have.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use osproxy_core::ErrorCode;
use osproxy_upstream::{read_answer, Answering, MAX_BUFFERED};

/// `left` frames of 1 MiB each.
struct Frames {
    left: usize,
    chunk: Bytes,
}

impl Frames {
    fn mib(n: usize) -> Self {
        Frames {
            left: n,
            chunk: Bytes::from(vec![b' '; 1024 * 1024]),
        }
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

/// Found by review: a bulk of updates asking for `_source` back was
/// applied, then answered 502 when the cluster's answer passed 100 MiB,
/// so the client saw a failure for writes that hold. A change's answer is
/// read to 400 MiB; a read's stays bounded at 100 MiB; past its bound a
/// change's refusal says the change may hold.
#[test]
fn a_changes_answer_is_read_past_the_read_bound_and_a_reads_is_not() {
    let over = MAX_BUFFERED / (1024 * 1024) + 50;
    let read = run(read_answer(Frames::mib(over), "c1", Answering::Read));
    let e = read.expect_err("a read's answer past 100 MiB");
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
    let change = run(read_answer(Frames::mib(over), "c1", Answering::Change))
        .expect("a change's answer of 150 MiB is read");
    assert_eq!(change.len(), over * 1024 * 1024);
    drop(change);
    let e = run(read_answer(Frames::mib(401), "c1", Answering::Change))
        .expect_err("a change's answer past 400 MiB");
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
    assert!(e.reason.contains("changes may hold"), "{}", e.reason);
}
