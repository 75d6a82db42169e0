//! Property tests: no byte sequence makes the decoder panic, and valid
//! headers round-trip.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use zfabric::wire::{self, ContentType, Deadline, Header, Kind, Limits, MessageId, NodeOp};

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Event),
        Just(Kind::Request),
        Just(Kind::Reply),
        Just(Kind::Error),
        Just(Kind::Control)
    ]
}

prop_compose! {
    fn header()(
        kind in kind(),
        id in any::<u128>(),
        source in any::<u64>(),
        seq in any::<u64>(),
        correlation in proptest::option::of(any::<u128>()),
        reply_to in proptest::option::of("[a-z]{0,40}"),
        deadline in proptest::option::of(any::<u64>()),
        attempt in any::<u32>(),
        traceparent in proptest::option::of("[0-9a-f-]{0,60}"),
        tracestate in proptest::option::of("[a-z0-9=,]{0,40}"),
        raw in any::<bool>(),
        service in proptest::option::of("[a-z.]{0,40}"),
        call_id in any::<u64>(),
        priority in any::<u8>(),
        hops in any::<u8>(),
        op in proptest::option::of(0usize..6),
    ) -> Header {
        Header {
            kind,
            id: MessageId(id),
            source,
            seq,
            correlation: correlation.map(MessageId),
            reply_to: reply_to.map(Into::into),
            deadline: deadline.map(Deadline),
            attempt,
            traceparent: traceparent.map(Into::into),
            tracestate: tracestate.map(Into::into),
            content_type: if raw { ContentType::Raw } else { ContentType::MsgPack },
            service: service.map(Into::into),
            call_id,
            priority,
            hops,
            op: op.map(|i| {
                [
                    NodeOp::Call,
                    NodeOp::Hello,
                    NodeOp::Leave,
                    NodeOp::Deliver,
                    NodeOp::Publish,
                    NodeOp::Unicast,
                ][i]
            }),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_header_round_trips(h in header()) {
        let mut buf = BytesMut::new();
        h.encode(&mut buf);
        prop_assert_eq!(Header::decode(&buf, 1 << 16).unwrap(), h);
    }

    #[test]
    fn random_bytes_never_panic_the_header_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Header::decode(&bytes, 1 << 16);
    }

    #[test]
    fn mutated_headers_never_panic(h in header(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut buf = BytesMut::new();
        h.encode(&mut buf);
        let mut v = buf.to_vec();
        for (i, b) in flips {
            let n = v.len();
            v[i % n] = b;
        }
        let n = v.len();
        v.truncate(cut % (n + 1));
        let _ = Header::decode(&v, 1 << 16);
    }

    #[test]
    fn random_frame_lists_never_panic_the_pair_decoder(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..6)) {
        let frames: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
        let _ = wire::decode_pairs(&frames, &Limits::default());
    }
}
