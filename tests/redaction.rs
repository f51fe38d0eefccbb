//! The redactor (`warroom::redact`) on any input: every class of secret is
//! hidden wherever it is planted, any UTF-8 is handled without a panic,
//! redacting twice changes nothing, `contains_secret` agrees with
//! `redact_text`, and pathological inputs (a keyword repeated megabytes
//! long) take linear time.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use warroom::redact::{REDACTED, contains_secret, redact_text};

/// Every shape a secret `s` is written in that must be hidden. `s` is
/// alphanumeric (a planted password); shapes that need more (a token of a
/// given length) build it from `s`.
fn shapes(s: &str) -> Vec<String> {
    let long = format!("{s}{s}{s}{s}").chars().take(40).collect::<String>();
    vec![
        // assignments, any spacing, quoting and separator
        format!("password={s}"),
        format!("PASSWORD = {s}"),
        format!("Password:{s}"),
        format!("password : {s}"),
        format!("\"password\" : \"{s} and more\""),
        format!("'password': '{s}'"),
        format!("{{\\\"password\\\": \\\"{s}\\\"}}"),
        format!("{{\"token\":\"{s}\"}}"),
        format!("db_pass: {s}"),
        format!("REDIS_PASS={s}"),
        format!("api-key => {s}"),
        format!("client_secret := {s}"),
        format!("access_token={s}&x=1"),
        format!("passphrase: \"{s}\""),
        format!("session={s}"),
        format!("credentials: {s}"),
        format!("fencing token: 42{s}"),
        format!("https://h/x?user=a&password={s}&y=1"),
        // environment-style names
        format!("AWS_SECRET_ACCESS_KEY {s}"),
        format!("export GITHUB_TOKEN={s}"),
        format!("REDIS_PASSWORD: {s}"),
        format!("STRIPE_API_KEY \"{s}\""),
        // command-line flags
        format!("--password {s}"),
        format!("--password={s}"),
        format!("--pass {s}"),
        format!("--token {s}"),
        format!("--kube-token={s}"),
        format!("--requirepass {s}"),
        format!("redis-cli -h redis-0 -p 6379 -a {s} ping"),
        format!("redis-cli -a '{s}' --no-auth-warning"),
        format!("mysql -u root -p{s} orders"),
        format!("sshpass -p {s} ssh bastion"),
        format!("docker login -u ops -p {s} registry.shop"),
        format!("curl -u admin:{s} https://exporter.shop/metrics"),
        // Redis commands
        format!("AUTH {s}"),
        format!("AUTH default {s}"),
        format!("127.0.0.1:6379> auth {s}"),
        format!("HELLO 3 AUTH default {s} SETNAME warroom"),
        format!("MIGRATE 10.0.0.2 6379 \"\" 0 5000 AUTH {s} KEYS a b"),
        format!("MIGRATE 10.0.0.2 6379 \"\" 0 5000 AUTH2 admin {s} KEYS a b"),
        format!("CONFIG SET requirepass {s}"),
        format!("config set masterauth \"{s}\""),
        format!("requirepass {s}"),
        format!("ACL SETUSER reader on >{s} ~* +@read"),
        // URL userinfo
        format!("redis://:{s}@redis-0.shop:6379/0"),
        format!("rediss://default:{s}@redis-0.shop:6380"),
        format!("postgres://orders:{s}@pg.shop/orders?sslmode=require"),
        format!("redis://127.0.0.1:6379/0?password={s}"),
        format!("https://{long}@github.com/shop/orders.git"),
        // headers and schemes
        format!("Authorization: Bearer {s}"),
        format!("authorization: {s}"),
        format!("Cookie: theme=dark; session={s}"),
        format!("\"Authorization\": \"Basic {s}{s}\""),
        format!("sent bearer {s} upstream"),
        // token shapes
        format!("eyJ{s}.eyJ{s}.{s}"),
        format!("-----BEGIN RSA PRIVATE KEY-----\n{s}\n{s}\n-----END RSA PRIVATE KEY-----"),
        format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{s}"),
        format!("ghp_{long}"),
        format!("glpat-{long}"),
        format!("xoxb-{long}"),
        format!("sk-{long}"),
        format!("sk-ant-api03-{long}"),
        format!("npm_{long}"),
        format!("pypi-AgEIcHlwaS5vcmc{long}"),
        format!("sk_live_{long}"),
        format!("rk_live_{long}"),
        format!("AIza{long}"),
        format!("AKIA{}", long.to_ascii_uppercase()),
    ]
}

/// The secret parts of [`shapes`]: what must not appear in the output.
fn must_hide(s: &str) -> Vec<String> {
    vec![s.to_string()]
}

fn secret() -> impl Strategy<Value = String> {
    // A planted password: letters and digits, starting with a letter so
    // that it is never a fencing token, never `[REDACTED]`.
    "[A-Za-z][A-Za-z0-9]{9,23}"
}

/// Prose around a secret: words, punctuation and a few non-ASCII characters.
fn prose() -> impl Strategy<Value = String> {
    "[a-z0-9 ,.()\u{e9}\u{2014}\u{65e5}\n]{0,24}"
}

/// Pieces that the redactor reacts to, to build adversarial mixes.
const PIECES: &[&str] = &[
    "password",
    "PASSWORD",
    "token",
    "pass",
    "_PASS",
    "secret",
    "api_key",
    "fencing",
    " ",
    "\t",
    "\n",
    "=",
    ":",
    "=>",
    ":=",
    "\"",
    "'",
    "\\",
    "\\\"",
    "--",
    "-a ",
    "-p",
    "AUTH ",
    "AUTH2 ",
    "auth ",
    "> ",
    "redis-cli ",
    "mysql ",
    "sshpass ",
    "curl -u ",
    "://",
    "@",
    "redis://",
    ":@",
    "Authorization:",
    "Cookie:",
    "Bearer ",
    "Basic ",
    "eyJ",
    ".",
    "ghp_",
    "sk-",
    "npm_",
    "AKIA",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----END ",
    "[REDACTED]",
    "ACL SETUSER u >",
    "requirepass ",
    "CONFIG SET ",
    "AWS_SECRET_ACCESS_KEY ",
    "abcdef.",
    "0123456789abcdef",
    "x",
    "42",
    "é",
    "日本",
    "🔥",
    "&",
    ";",
    ",",
    "<",
    ">",
    "`",
    "/",
    "#",
];

fn mix() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(PIECES).prop_map(str::to_string),
            1 => "[A-Za-z0-9]{1,12}",
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_planted_secret_never_survives_in_any_shape(
        s in secret(),
        before in prose(),
        after in prose(),
    ) {
        for shape in shapes(&s) {
            let text = format!("{before} {shape} {after}");
            let out = redact_text(&text);
            for hidden in must_hide(&s) {
                prop_assert!(!out.contains(&hidden), "{:?}\n  -> {:?}", text, out);
            }
            prop_assert!(out.contains(REDACTED));
            prop_assert!(contains_secret(&text));
        }
    }

    #[test]
    fn urls_hide_passwords_of_any_characters(
        pw in "[A-Za-z0-9/#?:@!$%*+~.,;=-]{6,24}",
        user in prop::sample::select(vec!["", "default", "orders", "app-7f"]),
    ) {
        prop_assume!(pw.chars().any(|c| c.is_ascii_alphanumeric()));
        let text = format!("connect redis://{user}:{pw}@redis-0.shop:6379/0 now");
        let out = redact_text(&text);
        prop_assert!(!out.contains(&pw), "{} -> {}", text, out);
        prop_assert!(out.contains("@redis-0.shop:6379/0 now"), "{} -> {}", text, out);
        prop_assert!(out.contains(&format!("redis://{user}:")), "{} -> {}", text, out);
    }

    #[test]
    fn any_text_is_redacted_idempotently_and_without_panicking(text in any::<String>()) {
        let once = redact_text(&text).into_owned();
        let twice = redact_text(&once).into_owned();
        prop_assert_eq!(&twice, &once);
        prop_assert_eq!(contains_secret(&text), once != text);
        prop_assert!(!contains_secret(&once));
    }

    #[test]
    fn adversarial_mixes_are_redacted_idempotently(text in mix()) {
        let once = redact_text(&text).into_owned();
        let twice = redact_text(&once).into_owned();
        prop_assert_eq!(&twice, &once, "input {:?}", text);
        prop_assert_eq!(contains_secret(&text), once != text);
        prop_assert!(!contains_secret(&once), "input {:?} output {:?}", text, once);
    }
}

/// Inputs that made the hand-written scanner quadratic (a keyword repeated
/// without a value end), and the same for every other class: 3 MB of each
/// must be redacted within a deadline that quadratic work (hours at this
/// size) could never meet. The redaction runs on its own thread so that a
/// quadratic one fails the test at the deadline instead of hanging it.
#[test]
fn pathological_inputs_take_linear_time() {
    const SIZE: usize = 3_000_000;
    let deadline = Duration::from_secs(20);
    for unit in [
        "password ",
        "password",
        "token=",
        "token_",
        "--token ",
        "password: ",
        "redis://:@",
        "://",
        "AUTH ",
        "Bearer ",
        "eyJ",
        "eyJ.",
        "-----BEGIN ",
        "-----BEGIN PRIVATE KEY-----",
        "Authorization:",
        "redis-cli -a ",
        "AWS_SECRET_ACCESS_KEY ",
        "a_",
        "fencing token ",
        "ghp_",
        "abcdef.",
        "x@",
        ":x@",
        "\"password\":\"",
        "\\\"",
        "é",
    ] {
        let text = unit.repeat(SIZE / unit.len());
        let (done, finished) = std::sync::mpsc::channel();
        let start = Instant::now();
        std::thread::spawn(move || {
            let once = redact_text(&text).into_owned();
            let _ = done.send(contains_secret(&once));
        });
        match finished.recv_timeout(deadline) {
            Ok(left_a_secret) => assert!(
                !left_a_secret,
                "{unit:?}: the redacted output still holds a secret"
            ),
            Err(_) => panic!(
                "{unit:?} x {}: not redacted after {:?}",
                SIZE / unit.len(),
                start.elapsed()
            ),
        }
    }
}
