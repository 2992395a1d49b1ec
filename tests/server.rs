//! A real `tandem serve` (SmolLM2) on 127.0.0.1, driven over HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const KEY: &str = "sekret";

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on a port the OS chose (`--port 0`), learnt from its "listening
/// on" line. Ports found free by the tests themselves could reach two tests
/// at once: the second server then failed to bind while its model loaded,
/// its health checks were answered by the first test's server, and its
/// requests were reset once that test ended (a rare "Connection reset").
fn start(extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "serve",
            "-m",
            "smollm2-135m",
            "--port",
            "0",
            "--api-key",
            KEY,
        ])
        .args(if extra.contains(&"-c") {
            &[][..]
        } else {
            &["-c", "512", "--kv-mem", "256MiB"][..]
        })
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // stderr is read to its end on a thread of its own, so the server never
    // blocks on a full pipe; what it said is kept for a failure's message.
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let kept = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on http://") {
                let _ = tx.send(addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()));
            }
            let mut kept = kept.lock().unwrap();
            kept.push_str(&line);
            kept.push('\n');
        }
    });
    let port = rx.recv_timeout(Duration::from_secs(120)).ok().flatten();
    let Some(port) = port else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("server did not come up: {}", log.lock().unwrap());
    };
    let s = Server { child, port };
    assert_eq!(
        raw(&s, "GET", "/health", None, true).0,
        200,
        "health after bind"
    );
    s
}

/// A minimal HTTP/1.1 exchange: (status, headers, body).
fn raw(
    s: &Server,
    method: &str,
    path: &str,
    body: Option<&str>,
    auth: bool,
) -> (u16, String, String) {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", s.port)) else {
        return (0, String::new(), String::new());
    };
    let body = body.unwrap_or("");
    let auth = if auth {
        format!("Authorization: Bearer {KEY}\r\n")
    } else {
        String::new()
    };
    write!(c, "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    let (head, rest) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let rest = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, head.to_string(), rest)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    let (st, _, b) = raw(s, "POST", path, Some(&body.to_string()), true);
    (st, serde_json::from_str(&b).unwrap_or(Value::Null))
}

fn metric(s: &Server, name: &str) -> f64 {
    let (_, _, b) = raw(s, "GET", "/metrics", None, false);
    b.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(f64::NAN)
}

fn sse_events(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(String::from)
        .collect()
}

#[test]
fn chat_completion_logprobs_and_n() {
    let s = start(&[]);
    let (st, v) = post(
        &s,
        "/v1/chat/completions",
        &json!({
            "model": "smollm2-135m",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name the capital city of France."}],
            "max_tokens": 16, "temperature": 0, "logprobs": true, "top_logprobs": 3
        }),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    let c = &v["choices"][0];
    assert!(
        c["message"]["content"].as_str().unwrap().contains("Paris"),
        "{v}"
    );
    let lp = c["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        lp.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(lp[0]["top_logprobs"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["usage"]["total_tokens"],
        v["usage"]["prompt_tokens"].as_u64().unwrap()
            + v["usage"]["completion_tokens"].as_u64().unwrap()
    );

    let (st, v) = post(
        &s,
        "/v1/chat/completions",
        &json!({
            "messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 8, "n": 3, "temperature": 1.0, "seed": 5
        }),
    );
    assert_eq!(st, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    assert_eq!(
        choices
            .iter()
            .map(|c| c["index"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(v["usage"]["completion_tokens"], 24);
}

#[test]
fn completions_stop_strings_and_legacy_logprobs() {
    let s = start(&[]);
    let (st, v) = post(
        &s,
        "/v1/completions",
        &json!({
            "prompt": "The capital of France is", "max_tokens": 40, "temperature": 0, "stop": ["United", "zzz"], "logprobs": 2
        }),
    );
    assert_eq!(st, 200, "{v}");
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "stop");
    assert!(
        c["text"].as_str().unwrap().starts_with(" Paris.")
            && !c["text"].as_str().unwrap().contains("United"),
        "{v}"
    );
    assert_eq!(
        c["logprobs"]["top_logprobs"][0].as_object().unwrap().len(),
        2
    );
    let (_, v) = post(
        &s,
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 3, "temperature": 0}),
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[test]
fn streaming_chat_with_usage_and_done() {
    let s = start(&[]);
    let body = json!({
        "messages": [{"role": "user", "content": "Name the capital city of France."}],
        "max_tokens": 12, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}
    });
    let (st, head, b) = raw(
        &s,
        "POST",
        "/v1/chat/completions",
        Some(&body.to_string()),
        true,
    );
    assert_eq!(st, 200);
    assert!(
        head.to_ascii_lowercase().contains("text/event-stream"),
        "{head}"
    );
    let events = sse_events(&b);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(text.contains("Paris"), "{text}");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"].is_string()));
}

#[test]
fn bad_input_gets_the_openai_error_body_and_status() {
    let s = start(&[]);
    let chat = "/v1/chat/completions";
    let cases: Vec<(&str, String, u16)> = vec![
        ("malformed JSON", "{\"messages\": [".into(), 400),
        (
            "unknown role",
            json!({"messages": [{"role": "wizard", "content": "x"}]}).to_string(),
            400,
        ),
        ("no messages", json!({"messages": []}).to_string(), 400),
        (
            "bad temperature",
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": -1}).to_string(),
            400,
        ),
        (
            "bad top_p",
            json!({"messages": [{"role": "user", "content": "x"}], "top_p": 7}).to_string(),
            400,
        ),
        (
            "n = 0",
            json!({"messages": [{"role": "user", "content": "x"}], "n": 0}).to_string(),
            400,
        ),
        (
            "too long",
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000})
                .to_string(),
            400,
        ),
        ("wrong type", json!({"messages": "hello"}).to_string(), 400),
        (
            "oversized",
            format!(
                "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}",
                "a".repeat(5 << 20)
            ),
            413,
        ),
    ];
    for (what, body, want) in cases {
        let (st, _, b) = raw(&s, "POST", chat, Some(&body), true);
        assert_eq!(st, want, "{what}: {b}");
        let v: Value = serde_json::from_str(&b).unwrap_or_else(|_| panic!("{what}: not JSON: {b}"));
        assert!(
            v["error"]["message"].is_string() && v["error"]["type"].is_string(),
            "{what}: {v}"
        );
    }
    let (st, _, b) = raw(
        &s,
        "POST",
        chat,
        Some(&json!({"messages": [{"role": "user", "content": "x"}]}).to_string()),
        false,
    );
    assert_eq!(st, 401, "{b}");
    let (st, _, _) = raw(&s, "GET", "/v1/models", None, true);
    assert_eq!(st, 200);
    assert!(metric(&s, "tandem_requests_total{status=\"400\"}") >= 8.0);
}

#[test]
fn queue_full_is_503_with_retry_after() {
    let s = start(&["--max-waiting", "0"]);
    let (st, head, b) = raw(
        &s,
        "POST",
        "/v1/completions",
        Some(&json!({"prompt": "x", "max_tokens": 2}).to_string()),
        true,
    );
    assert_eq!(st, 503, "{b}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
}

#[test]
fn disconnect_mid_stream_frees_blocks() {
    let s = start(&[]);
    let body = json!({"prompt": "Once upon a time", "max_tokens": 400, "temperature": 1.0, "stream": true}).to_string();
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut seen = 0;
    let mut line = String::new();
    while seen < 3 {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.starts_with("data: ") {
            seen += 1;
        }
    }
    assert!(metric(&s, "tandem_kv_blocks_used") > 0.0);
    drop(r);
    drop(c);
    let t = Instant::now();
    while metric(&s, "tandem_kv_blocks_used") != 0.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "blocks were not freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&s, "tandem_running_sequences"), 0.0);
}

#[test]
fn random_json_never_takes_the_server_down() {
    use rand::{Rng, SeedableRng};
    let s = start(&[]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let atoms = [
        json!(null),
        json!(-1),
        json!(1e300),
        json!("x"),
        json!([]),
        json!({}),
        json!(true),
        json!(3),
        json!([{"role": "user"}]),
    ];
    let keys = [
        "messages",
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "n",
        "stop",
        "logprobs",
        "top_logprobs",
        "stream",
        "seed",
        "min_p",
    ];
    for i in 0..150 {
        let mut obj = serde_json::Map::new();
        for _ in 0..rng.random_range(0..6) {
            let k = keys[rng.random_range(0..keys.len())];
            obj.insert(k.into(), atoms[rng.random_range(0..atoms.len())].clone());
        }
        if i % 3 == 0 {
            obj.insert(
                "messages".into(),
                json!([{"role": "user", "content": "hi"}]),
            );
            obj.insert("max_tokens".into(), json!(2));
        }
        let path = if i % 2 == 0 {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        };
        let (st, _, b) = raw(
            &s,
            "POST",
            path,
            Some(&Value::Object(obj).to_string()),
            true,
        );
        assert!(
            st == 200 || (400..500).contains(&st),
            "request {i}: status {st}: {b}"
        );
    }
    assert_eq!(raw(&s, "GET", "/health", None, false).0, 200);
}

/// The official `openai` Python package (installed into `target/py-venv` on
/// first use) against the server: chat, streaming, completions, n, errors.
#[test]
fn official_openai_client() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/py-venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap()
            .success();
        assert!(ok, "python3 -m venv failed");
    }
    let has = Command::new(&py)
        .args(["-c", "import openai"])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    if !has {
        let ok = Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "openai",
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "pip install openai failed");
    }
    let s = start(&[]);
    let out = Command::new(&py)
        .arg(root.join("tests/py/openai_client.py"))
        .arg(format!("http://127.0.0.1:{}/v1", s.port))
        .arg(KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Time from sending a streaming completion to its first content chunk,
/// and the request's usage.
fn ttft_and_usage(s: &Server, prompt: &str) -> (Duration, Value) {
    let body = json!({"prompt": prompt, "max_tokens": 4, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}).to_string();
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let t = Instant::now();
    write!(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut r = BufReader::new(c);
    let mut line = String::new();
    let mut first = None;
    let mut usage = Value::Null;
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(d) = line.trim().strip_prefix("data: ") {
            first.get_or_insert_with(|| t.elapsed());
            if let Ok(v) = serde_json::from_str::<Value>(d) {
                if v["usage"].is_object() {
                    usage = v["usage"].clone();
                }
            }
        }
    }
    (first.unwrap(), usage)
}

#[test]
fn prefix_cache_cuts_time_to_first_token() {
    let s = start(&["-c", "2048", "--kv-mem", "512MiB"]);
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/refs/corpus/wikitext-2-raw-test.txt");
    let text = std::fs::read_to_string(corpus).unwrap();
    // About 1,000 tokens of shared prefix.
    let prefix: String = text.chars().skip(1000).take(4200).collect();
    let (cold, u1) = ttft_and_usage(&s, &format!("{prefix}\nQuestion one:"));
    let (warm, u2) = ttft_and_usage(&s, &format!("{prefix}\nQuestion two:"));
    assert!(u1["prompt_tokens"].as_u64().unwrap() >= 900, "{u1}");
    assert_eq!(u1["prompt_tokens_details"]["cached_tokens"], 0);
    let cached = u2["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached >= 880, "{u2}");
    assert!(metric(&s, "tandem_prompt_tokens_cached_total") >= cached as f64);
    assert!(metric(&s, "tandem_prefix_cache_hit_rate") > 0.4);
    eprintln!(
        "TTFT cold {cold:?}, warm {warm:?} ({:.1}x)",
        cold.as_secs_f64() / warm.as_secs_f64()
    );
    assert!(cold >= warm * 5, "cold {cold:?} vs warm {warm:?}");
}

#[test]
fn ctrl_c_lets_running_streams_finish_then_exits() {
    let mut s = start(&[]);
    let body = json!({"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0, "ignore_eos": true, "stream": true}).to_string();
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut r = BufReader::new(c);
    let mut line = String::new();
    // Wait for the first token, then interrupt the server.
    while !line.starts_with("data: ") {
        line.clear();
        r.read_line(&mut line).unwrap();
    }
    let ok = Command::new("kill")
        .args(["-INT", &s.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    let events = sse_events(&rest);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "the stream was cut: {rest}"
    );
    let tokens = events.iter().filter(|e| e.contains("\"text\"")).count();
    assert!(tokens >= 40, "only {tokens} more chunks arrived");
    let t = Instant::now();
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "server did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // New connections are refused once it has gone.
    assert_eq!(raw(&s, "GET", "/health", None, false).0, 0);
}

#[test]
fn speculation_reports_in_the_response_and_in_metrics() {
    let spec = start(&["--spec", "ngram", "--k", "3"]);
    let plain = start(&[]);
    let body = json!({
        "prompt": "one two three four one two three four one two three four one two",
        "max_tokens": 24, "temperature": 0
    });
    let (st, v) = post(&spec, "/v1/completions", &body);
    assert_eq!(st, 200, "{v}");
    let (_, w) = post(&plain, "/v1/completions", &body);
    assert_eq!(v["choices"][0]["text"], w["choices"][0]["text"]);
    assert!(w.get("speculation").is_none(), "{w}");
    let sp = &v["speculation"];
    assert_eq!(sp["proposer"], "ngram", "{v}");
    let (drafted, accepted) = (
        sp["drafted"].as_f64().unwrap(),
        sp["accepted"].as_f64().unwrap(),
    );
    assert!(
        drafted > 0.0 && accepted > 0.0 && accepted <= drafted,
        "{sp}"
    );
    assert!(sp["tokens_per_pass"].as_f64().unwrap() > 1.0, "{sp}");
    assert_eq!(metric(&spec, "tandem_spec_draft_tokens_total"), drafted);
    assert_eq!(metric(&spec, "tandem_spec_accepted_tokens_total"), accepted);
    assert!(metric(&spec, "tandem_spec_acceptance_rate") > 0.0);
    assert!(metric(&spec, "tandem_spec_k_total{k=\"3\"}") > 0.0);

    // Streamed: the final usage chunk carries the same extension object.
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let (st, _, b) = raw(
        &spec,
        "POST",
        "/v1/completions",
        Some(&sbody.to_string()),
        true,
    );
    assert_eq!(st, 200);
    let events = sse_events(&b);
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(last["speculation"]["proposer"], "ngram", "{last}");
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // Flags that cannot work are refused at start-up, with a reason.
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "-m", "smollm2-135m", "--spec", "magic"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown --spec"));
}
