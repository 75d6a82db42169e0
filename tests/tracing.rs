//! Traces across hops: a chain of nodes in this process, seen through a
//! capturing `tracing` layer; and three `zfabric` processes in a chain
//! exporting over real OTLP/HTTP to a receiver started here, their spans
//! decoded with `opentelemetry-proto` and checked to form one trace with
//! the right parents and kinds.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{converge, fast, watchdog};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::io::{AsyncBufReadExt, BufReader};
use tracing_subscriber::layer::SubscriberExt;
use zfabric::node::Node;
use zfabric::topology::chain::forward;
use zfabric::{RemoteError, Request};

/// One library span as the capturing layer saw it.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: String,
    fields: HashMap<String, String>,
}

impl Seen {
    fn get(&self, k: &str) -> &str {
        self.fields.get(k).map(String::as_str).unwrap_or("")
    }
}

struct Capture(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        self.0.insert(f.name().to_string(), v.to_string());
    }
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        self.0.insert(f.name().to_string(), format!("{v:?}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().target() != zfabric::trace::TARGET {
            return;
        }
        let mut seen = Seen {
            name: attrs.metadata().name().to_string(),
            ..Seen::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        self.0.lock().unwrap().push(seen);
    }
}

/// The spans of this process, captured once for the whole test binary.
fn captured() -> Arc<Mutex<Vec<Seen>>> {
    static SPANS: OnceLock<Arc<Mutex<Vec<Seen>>>> = OnceLock::new();
    SPANS
        .get_or_init(|| {
            let spans = Arc::new(Mutex::new(Vec::new()));
            let filter = tracing_subscriber::filter::Targets::new()
                .with_target(zfabric::trace::TARGET, tracing::Level::INFO);
            let subscriber = tracing_subscriber::registry().with(
                tracing_subscriber::Layer::with_filter(Capture(spans.clone()), filter),
            );
            tracing::subscriber::set_global_default(subscriber).unwrap();
            zfabric::trace::set_sampling(true);
            spans
        })
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_a_chain_of_nodes_is_one_trace_with_each_hop_the_child_of_the_last() {
    let spans = captured();
    watchdog(async {
        let id = std::process::id();
        let seen_at_a = Arc::new(Mutex::new(None));
        let s = seen_at_a.clone();
        let a = Node::builder("a")
            .config(fast())
            .bind(format!("inproc://trace-a-{id}"))
            .serve("pricing", move |req: Request<u32>| {
                let s = s.clone();
                async move {
                    // The handler runs in the trace of its request.
                    *s.lock().unwrap() = zfabric::trace::current();
                    assert_eq!(
                        req.trace_context().map(|c| c.trace_id()),
                        zfabric::trace::current().map(|c| c.trace_id())
                    );
                    Ok::<_, RemoteError>(req.body * 2)
                }
            })
            .start()
            .await
            .unwrap();
        let b_builder = Node::builder("b")
            .config(fast())
            .bind(format!("inproc://trace-b-{id}"))
            .seed(a.endpoints()[0].to_string());
        let handle = b_builder.handle();
        let b = b_builder
            .serve_raw(
                "quote",
                Default::default(),
                forward(handle, "pricing", Duration::from_secs(5)),
            )
            .start()
            .await
            .unwrap();
        let c = Node::builder("c")
            .config(fast())
            .bind(format!("inproc://trace-c-{id}"))
            .seed(a.endpoints()[0].to_string())
            .start()
            .await
            .unwrap();
        converge(&[&a, &b, &c]).await;

        let n: u32 = c
            .request("quote", &21u32, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(n, 42);

        // The spans of this call (other tests of this binary trace too).
        let got: Vec<Seen> = spans.lock().unwrap().clone();
        let root = got
            .iter()
            .find(|s| s.get("otel.name") == "call quote")
            .expect("the call's span")
            .get("trace_id")
            .to_string();
        let got: Vec<Seen> = got
            .into_iter()
            .filter(|s| s.get("trace_id") == root)
            .collect();
        let find = |name: &str| {
            got.iter()
                .find(|s| s.get("otel.name") == name)
                .unwrap_or_else(|| panic!("no span {name:?} in {got:#?}"))
                .clone()
        };
        let (call_quote, serve_quote) = (find("call quote"), find("serve quote"));
        let (call_pricing, serve_pricing) = (find("call pricing"), find("serve pricing"));
        let trace = call_quote.get("trace_id").to_string();
        assert_eq!(trace.len(), 32);
        for s in [&call_quote, &serve_quote, &call_pricing, &serve_pricing] {
            assert_eq!(s.get("trace_id"), trace, "one trace: {s:?}");
            assert_eq!(s.get("messaging.system"), "zeromq");
        }
        assert_eq!(
            call_quote.get("parent_span_id"),
            "",
            "the first call is the root"
        );
        assert_eq!(serve_quote.get("parent_span_id"), call_quote.get("span_id"));
        assert_eq!(
            call_pricing.get("parent_span_id"),
            serve_quote.get("span_id"),
            "the forwarding handler's call continues the trace it serves"
        );
        assert_eq!(
            serve_pricing.get("parent_span_id"),
            call_pricing.get("span_id")
        );
        let kinds: Vec<&str> = [&call_quote, &serve_quote, &call_pricing, &serve_pricing]
            .iter()
            .map(|s| s.get("otel.kind"))
            .collect();
        assert_eq!(kinds, ["client", "server", "client", "server"]);
        assert_eq!(
            (call_quote.name.as_str(), serve_quote.name.as_str()),
            ("call", "serve")
        );
        assert_eq!(serve_pricing.get("messaging.destination.name"), "pricing");
        let at_a = seen_at_a.lock().unwrap().clone().expect("a handler ran");
        assert_eq!(at_a.trace_id_hex(), trace);
        assert_eq!(
            format!("{:016x}", at_a.span_id().unwrap()),
            serve_pricing.get("span_id")
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_in_a_trace_is_continued_by_its_subscriber_and_a_forwarder() {
    let spans = captured();
    watchdog(async {
        use zfabric::topology::gateway::Forwarder;
        use zfabric::{Publisher, Subscriber};
        let id = std::process::id();
        let up = format!("inproc://trace-up-{id}");
        let down = format!("inproc://trace-down-{id}");
        let publisher: Publisher<u32> = Publisher::bind(&up).await.unwrap();
        let fwd = Forwarder::start(&[up.as_str()], &[""], &down)
            .await
            .unwrap();
        let mut sub: Subscriber<u32> = Subscriber::connect(&down, &["orders."]).await.unwrap();
        let t = zfabric::trace::TraceContext::new_trace();
        // Slow joiner: publish until one comes through (bounded).
        let mut first = None;
        for _ in 0..200 {
            zfabric::trace::with_context(t.clone(), publisher.publish("orders.created", &7))
                .await
                .unwrap();
            if let Ok(d) = sub.recv_timeout(Duration::from_millis(20)).await {
                first = Some(d);
                break;
            }
        }
        let d = first.expect("a message through the forwarder");
        // The forwarder counts a message once its publish has returned,
        // which can be just after the subscriber already has it.
        tokio::time::timeout(Duration::from_secs(5), async {
            while fwd.forwarded() < 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the forwarder counted what it forwarded");
        let cx = d.trace_context().expect("the delivery carries the trace");
        assert_eq!(cx.trace_id(), t.trace_id());
        // A plain publish outside a trace carries none.
        publisher.publish("orders.created", &8).await.unwrap();
        let plain = loop {
            let d = sub.recv_timeout(Duration::from_secs(5)).await.unwrap();
            if d.decode().unwrap() == 8 {
                break d;
            }
        };
        assert!(plain.trace_context().is_none());
        assert!(plain.header().traceparent.is_none());

        let got = spans.lock().unwrap().clone();
        let of_trace: Vec<&Seen> = got
            .iter()
            .filter(|s| s.get("trace_id") == t.trace_id_hex())
            .collect();
        let names: Vec<&str> = of_trace.iter().map(|s| s.get("otel.name")).collect();
        assert!(names.contains(&"publish orders.created"), "{names:?}");
        assert!(names.contains(&"receive orders.created"), "{names:?}");
        // The subscriber's delivery names its receive span, whose parent
        // is the forwarder's republish, whose parent is the forwarder's
        // receive, whose parent is the first publish.
        let by_id = |id: &str| {
            of_trace
                .iter()
                .find(|s| s.get("span_id") == id)
                .copied()
                .unwrap_or_else(|| panic!("no span {id} in {of_trace:#?}"))
        };
        let last = by_id(&format!("{:016x}", cx.span_id().unwrap()));
        let republish = by_id(last.get("parent_span_id"));
        let fwd_receive = by_id(republish.get("parent_span_id"));
        let publish = by_id(fwd_receive.get("parent_span_id"));
        let chain: Vec<(&str, &str)> = [last, republish, fwd_receive, publish]
            .iter()
            .map(|s| (s.get("otel.name"), s.get("otel.kind")))
            .collect();
        assert_eq!(
            chain,
            [
                ("receive orders.created", "consumer"),
                ("publish orders.created", "producer"),
                ("receive orders.created", "consumer"),
                ("publish orders.created", "producer"),
            ]
        );
        assert_eq!(publish.get("parent_span_id"), "", "the trace's root");
    })
    .await
}

/// An OTLP/HTTP receiver: every span posted to `/v1/traces`, with the
/// `service.name` of its resource.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>>);

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

async fn receiver() -> (String, Received, tokio::task::JoinHandle<()>) {
    let got = Received::default();
    let store = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .as_ref()
                        .and_then(|r| string_attr(&r.attributes, "service.name"))
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            store.0.lock().unwrap().push((service.clone(), s));
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, got, task)
}

/// A `zfabric` process, killed if the test ends before it does.
struct Proc {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Proc {
    fn start(args: &[&str], otlp: &str, service: &str) -> Proc {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_zfabric"))
            .args(args)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
            .env("OTEL_SERVICE_NAME", service)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("ZFABRIC_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Proc { child, stdout }
    }

    /// Reads stdout up to the first line containing `what`.
    async fn line_with(&mut self, what: &str) -> String {
        loop {
            match self.stdout.next_line().await.unwrap() {
                Some(l) if l.contains(what) => return l,
                Some(_) => {}
                None => panic!("stdout closed before a line with {what:?}"),
            }
        }
    }

    /// SIGTERM, then waits for a clean exit (spans flushed).
    async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the process stops on SIGTERM")
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_in_a_chain_export_one_trace_over_otlp() {
    watchdog(async {
        let (otlp, got, server) = receiver().await;
        let dir = tempfile::tempdir().unwrap();
        let a_cfg = dir.path().join("a.toml");
        std::fs::write(
            &a_cfg,
            "name = \"a\"\nbind = [\"tcp://127.0.0.1:0\"]\n[[service]]\nname = \"pricing\"\nhandler = \"echo\"\n",
        )
        .unwrap();
        let mut a = Proc::start(&["node", "--config", a_cfg.to_str().unwrap()], &otlp, "pricing-node");
        let a_line = a.line_with("listening on").await;
        let a_ep = a_line.rsplit(' ').next().unwrap().to_string();

        let b_cfg = dir.path().join("b.toml");
        std::fs::write(
            &b_cfg,
            format!(
                "name = \"b\"\nbind = [\"tcp://127.0.0.1:0\"]\nseeds = [{a_ep:?}]\n[[service]]\nname = \"quote\"\nhandler = \"forward\"\nto = \"pricing\"\n"
            ),
        )
        .unwrap();
        let mut b = Proc::start(&["node", "--config", b_cfg.to_str().unwrap()], &otlp, "quote-node");
        let b_line = b.line_with("listening on").await;
        let b_ep = b_line.rsplit(' ').next().unwrap().to_string();
        // B forwards to pricing once it knows A serves it.
        b.line_with("joined: a").await;

        let req = tokio::process::Command::new(env!("CARGO_BIN_EXE_zfabric"))
            .args([
                "req", "--connect", &b_ep, "--service", "quote", "--data", "{\"n\":1}",
                "--timeout", "10000", "--trace",
            ])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
            .env("OTEL_SERVICE_NAME", "terminal")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), req)
            .await
            .expect("req ends")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("{\"n\":1}"), "{stdout}");
        let trace = stderr
            .lines()
            .find_map(|l| l.strip_prefix("trace "))
            .unwrap_or_else(|| panic!("no trace id printed: {stderr}"))
            .trim()
            .to_string();
        assert_eq!(trace.len(), 32, "{trace}");

        // Stopping flushes what each node still holds.
        b.stop().await;
        a.stop().await;

        let spans = common::eventually(200, Duration::from_millis(50), || {
            let got = got.clone();
            async move {
                let spans = got.0.lock().unwrap().clone();
                let names = ["call quote", "serve quote", "call pricing", "serve pricing"];
                names
                    .iter()
                    .all(|n| spans.iter().any(|(_, s)| s.name == *n))
                    .then_some(spans)
            }
        })
        .await;
        let one = |name: &str| {
            let mut it = spans.iter().filter(|(_, s)| s.name == name);
            let first = it.next().unwrap().clone();
            assert!(it.next().is_none(), "one {name} span");
            first
        };
        let (svc0, call_quote) = one("call quote");
        let (svc1, serve_quote) = one("serve quote");
        let (svc2, call_pricing) = one("call pricing");
        let (svc3, serve_pricing) = one("serve pricing");
        assert_eq!(
            [svc0.as_str(), &svc1, &svc2, &svc3],
            ["terminal", "quote-node", "quote-node", "pricing-node"],
            "each span from its process"
        );
        for s in [&call_quote, &serve_quote, &call_pricing, &serve_pricing] {
            assert_eq!(hex(&s.trace_id), trace, "one trace, the one req printed");
            assert_eq!(
                string_attr(&s.attributes, "messaging.system").as_deref(),
                Some("zeromq")
            );
            for gone in ["trace_id", "span_id", "parent_span_id"] {
                assert!(string_attr(&s.attributes, gone).is_none(), "{gone} is no attribute");
            }
        }
        assert!(call_quote.parent_span_id.is_empty(), "the terminal's call is the root");
        assert_eq!(serve_quote.parent_span_id, call_quote.span_id);
        assert_eq!(call_pricing.parent_span_id, serve_quote.span_id);
        assert_eq!(serve_pricing.parent_span_id, call_pricing.span_id);
        let kinds: Vec<i32> = [&call_quote, &serve_quote, &call_pricing, &serve_pricing]
            .iter()
            .map(|s| s.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                SpanKind::Client as i32,
                SpanKind::Server as i32,
                SpanKind::Client as i32,
                SpanKind::Server as i32
            ]
        );
        assert_eq!(
            string_attr(&serve_pricing.attributes, "messaging.destination.name").as_deref(),
            Some("pricing")
        );
        assert_eq!(
            string_attr(&call_quote.attributes, "messaging.operation.name").as_deref(),
            Some("call")
        );
        // Control traffic (joins, heartbeats) is not traced: every span
        // exported belongs to the one call.
        assert!(
            spans.iter().all(|(_, s)| hex(&s.trace_id) == trace),
            "{:?}",
            spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
        );
        server.abort();
    })
    .await
}
