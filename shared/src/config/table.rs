//! THE table of shop's environment variables: each one's name, default and meaning, once.
//! The services' `from_env` read through it ([`super::Source`]: an unset variable takes the
//! default written here), `shop up --help` prints it, and docs/configuration.md's table is
//! rendered from it ([`super::markdown_table`]; a test fails when the page is stale).

/// One environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The variable; `<SERVICE>_…` stands for each service's own (`ORDER_DATABASE_URL`, …).
    pub key: &'static str,
    /// What holds when it is unset.
    pub default: Fallback,
    /// What it does (markdown: `code` in backticks).
    pub meaning: &'static str,
}

/// What a setting is when its variable is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// This value, parsed as the variable would be.
    Value(&'static str),
    /// Nothing: the feature is off or the library decides; the text says which.
    Unset(&'static str),
    /// Worked out by the code that reads it (per service, per machine); the text says how.
    Computed(&'static str),
}

/// Every environment variable shop's services and tools read, in the order the docs show.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "AMQP_URL",
        default: Fallback::Value("amqp://guest:guest@127.0.0.1:5672/%2f"),
        meaning: "the broker; a cluster's nodes as a comma-separated list of URLs: every connection (relay, consumers, tools) tries them in turn, on connect and on every reconnect starting after the node it lost, so losing a node costs a reconnect, not an outage",
    },
    Setting {
        key: "AMQP_PREFIX",
        default: Fallback::Unset("empty"),
        meaning: "prepended to every exchange and queue name (tests use a random one)",
    },
    Setting {
        key: "<SERVICE>_DATABASE_URL",
        default: Fallback::Computed("`postgres://postgres@127.0.0.1:5432/shop_<service>`"),
        meaning: "a service's database, created if missing (`USER_`, `ORDER_`, `INVENTORY_`, `NOTIFICATION_`)",
    },
    Setting {
        key: "<SERVICE>_GRPC_ADDR",
        default: Fallback::Computed("`0.0.0.0:50051` … `:50054`"),
        meaning: "a service's gRPC address (user, order, inventory, notification); a host name is resolved (`localhost:50052`)",
    },
    Setting {
        key: "<SERVICE>_HTTP_ADDR",
        default: Fallback::Computed("`0.0.0.0:9091` … `:9094`"),
        meaning: "a service's HTTP address (user, order, inventory, notification): `GET /metrics` on every service, the JWK Set on the user service's; a host name is resolved",
    },
    Setting {
        key: "AUTH_JWKS_URL",
        default: Fallback::Value("http://127.0.0.1:9091/.well-known/jwks.json"),
        meaning: "where the order, inventory and notification services fetch the public keys; `http://` or `https://` (rustls, the system's root certificates)",
    },
    Setting {
        key: "AUTH_JWKS_REFETCH_MS",
        default: Fallback::Value("1000"),
        meaning: "at most one JWK Set refetch per this interval for tokens with an unknown `kid`",
    },
    Setting {
        key: "AUTH_JWKS_REFRESH_S",
        default: Fallback::Value("300"),
        meaning: "how often the JWK Set is refetched anyway (which also drops keys no longer published)",
    },
    Setting {
        key: "AUTH_TOKEN_TTL_S",
        default: Fallback::Value("900"),
        meaning: "how long an access token is valid (user service, `shop keys`)",
    },
    Setting {
        key: "LOGIN_MAX_FAILURES",
        default: Fallback::Value("5"),
        meaning: "failed logins for one email within `LOGIN_WINDOW_S` after which Login answers RESOURCE_EXHAUSTED",
    },
    Setting {
        key: "LOGIN_WINDOW_S",
        default: Fallback::Value("300"),
        meaning: "the login throttling window; failures older than it are purged for every email",
    },
    Setting {
        key: "PASSWORD_HASH_CONCURRENCY",
        default: Fallback::Computed("the number of CPUs"),
        meaning: "password checks (CreateUser, Login) running at once",
    },
    Setting {
        key: "PASSWORD_HASH_QUEUE",
        default: Fallback::Value("32"),
        meaning: "calls waiting for a password check; beyond them CreateUser and Login answer RESOURCE_EXHAUSTED at once",
    },
    Setting {
        key: "SHOP_ADMIN_EMAIL",
        default: Fallback::Unset("unset"),
        meaning: "the email of the staff account the user service makes sure of at start (with `SHOP_ADMIN_PASSWORD`: both or neither); unset: no staff",
    },
    Setting {
        key: "SHOP_ADMIN_PASSWORD",
        default: Fallback::Unset("unset"),
        meaning: "the staff account's password (with `SHOP_ADMIN_EMAIL`); never logged",
    },
    Setting {
        key: "DATABASE_POOL_SIZE",
        default: Fallback::Value("16"),
        meaning: "connections per service",
    },
    Setting {
        key: "CONSUMER_PREFETCH",
        default: Fallback::Value("256"),
        meaning: "unacknowledged deliveries per consumer channel",
    },
    Setting {
        key: "CONSUMER_BATCH",
        default: Fallback::Value("64"),
        meaning: "most deliveries applied in one transaction and acked with one multiple-ack",
    },
    Setting {
        key: "CONSUMER_CONCURRENCY",
        default: Fallback::Value("1"),
        meaning: "consumer channels per service (batches of one channel run in order)",
    },
    Setting {
        key: "CONSUMER_LINGER_MS",
        default: Fallback::Value("1"),
        meaning: "how long a consumer waits for more deliveries to fill a batch",
    },
    Setting {
        key: "OUTBOX_LINGER_MS",
        default: Fallback::Value("1"),
        meaning: "how long a woken relay lets rows gather before it claims a round",
    },
    Setting {
        key: "RETRY_BASE_MS",
        default: Fallback::Value("1000"),
        meaning: "the first delay of the backoff of transient handler failures",
    },
    Setting {
        key: "RETRY_FACTOR",
        default: Fallback::Value("5"),
        meaning: "by how much each next delay of that backoff grows",
    },
    Setting {
        key: "RETRY_ATTEMPTS",
        default: Fallback::Value("5"),
        meaning: "attempts of a message whose handler fails transiently (the first included) before it is dead-lettered",
    },
    Setting {
        key: "OUTBOX_BATCH",
        default: Fallback::Value("1000"),
        meaning: "outbox rows claimed and published per relay round",
    },
    Setting {
        key: "OUTBOX_POLL_MS",
        default: Fallback::Value("1000"),
        meaning: "how often the relay claims staged rows as a fallback: what its service commits is handed to it in-process right after the commit (the fast path), and a NOTIFY on the PostgreSQL channel `shop_outbox`, which only tools outside the process send (`shop outbox unpark`), wakes it",
    },
    Setting {
        key: "OUTBOX_MAX_ATTEMPTS",
        default: Fallback::Value("10"),
        meaning: "failed publishes before an outbox row is parked as dead (only failures of the row's own count, never a broker outage)",
    },
    Setting {
        key: "SMTP_URL",
        default: Fallback::Unset("unset"),
        meaning: "(notification) the mail server notifications are emailed through: `smtp://[user:pass@]host[:port]` (STARTTLS when offered) or `smtps://…`; unset: notifications are recorded only",
    },
    Setting {
        key: "SMTP_FROM",
        default: Fallback::Value("shop <no-reply@shop.localhost>"),
        meaning: "(notification) the sender of every email",
    },
    Setting {
        key: "NOTIFY_MAX_ATTEMPTS",
        default: Fallback::Value("8"),
        meaning: "(notification) attempts before a notification the mail server refuses for now (4xx) or cannot be reached for is FAILED",
    },
    Setting {
        key: "NOTIFY_RETRY_BASE_MS",
        default: Fallback::Value("5000"),
        meaning: "(notification) the first retry's delay, doubled for each next one, at most 15 minutes",
    },
    Setting {
        key: "OUTBOX_CONFIRM_TIMEOUT_MS",
        default: Fallback::Value("10000"),
        meaning: "how long a relay waits for the broker's confirms before it releases its rows, unchanged, and starts again on a new channel; also how old a row must be before a claiming round takes it while the fast path is in use",
    },
    Setting {
        key: "OUTBOX_RETENTION_S",
        default: Fallback::Value("3600"),
        meaning: "how long published outbox rows are kept",
    },
    Setting {
        key: "INBOX_RETENTION_S",
        default: Fallback::Value("604800"),
        meaning: "how long the id of an applied message is kept to recognise a duplicate (far longer than any redelivery path)",
    },
    Setting {
        key: "RESERVATION_RETENTION_S",
        default: Fallback::Value("2592000"),
        meaning: "how long the inventory keeps a settled reservation record (FAILED, RELEASED)",
    },
    Setting {
        key: "ORDER_RESERVATION_TIMEOUT_S",
        default: Fallback::Value("300"),
        meaning: "how long an order may stay PENDING waiting for the inventory; then it is CANCELLED (\"the inventory did not answer within 300 s\") and `order.cancelled` published",
    },
    Setting {
        key: "PURGE_INTERVAL_S",
        default: Fallback::Value("60"),
        meaning: "how often the tables above (and `login_failures`) are purged of rows past their retention",
    },
    Setting {
        key: "METRICS_SAMPLE_INTERVAL_MS",
        default: Fallback::Value("5000"),
        meaning: "how often the gauges that need a query (outbox depth and age, dead letters, inbox size, pool) are sampled; a scrape never queries",
    },
    Setting {
        key: "RETIRED_ROUTING_KEYS",
        default: Fallback::Unset("empty"),
        meaning: "comma-separated routing keys of event shapes no longer published once every consumer reads the newer shape, e.g. `user.created` (see docs/contracts.md, \"Changing a contract\"); the newest shape of an event is always published",
    },
    Setting {
        key: "QUEUE_REPLICAS",
        default: Fallback::Unset("unset: RabbitMQ's default"),
        meaning: "on how many broker nodes each service queue and its DLQ (quorum queues) are replicated (`x-quorum-initial-group-size`); fixed when a queue is first declared: grow an existing one with `rabbitmq-queues grow <node> all` or `add_member`",
    },
    Setting {
        key: "PASSWORD_HASH_MEMORY_KIB",
        default: Fallback::Value("19456"),
        meaning: "argon2id memory cost (OWASP minimum)",
    },
    Setting {
        key: "PASSWORD_HASH_ITERATIONS",
        default: Fallback::Value("2"),
        meaning: "argon2id iterations (OWASP minimum)",
    },
    Setting {
        key: "RUST_LOG",
        default: Fallback::Value("info"),
        meaning: "log filter (PostgreSQL NOTICEs only from WARN, and lapin's own lines off: shop reports every broker failure itself; unless it says otherwise)",
    },
    Setting {
        key: "LOG_FORMAT",
        default: Fallback::Value("pretty"),
        meaning: "`json` for one JSON object per line",
    },
    Setting {
        key: "NO_COLOR",
        default: Fallback::Unset("unset"),
        meaning: "set: no colour codes in the logs (they are only used when stderr is a terminal anyway)",
    },
    Setting {
        key: "OTEL_EXPORTER_OTLP_ENDPOINT",
        default: Fallback::Unset("unset"),
        meaning: "OTLP/gRPC endpoint for spans (e.g. `http://localhost:4317`); unset: nothing exported",
    },
];
