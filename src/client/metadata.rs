//! The shared core of the producer, consumer and admin client: bootstrap
//! addresses, one cached connection per broker, and a metadata cache
//! (brokers, controller, topics and their leaders) refreshed on demand.

use super::connection::Connection;
use super::Error;
use crate::io::net::{NetworkRef, TcpNetwork};
use crate::proto::client_request::Body as Req;
use crate::proto::client_response::Body as Resp;
use crate::proto::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the client reaches the cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// host:port of one or more brokers; the rest come from metadata.
    pub bootstrap: Vec<String>,
    /// How long one request may wait for its answer.
    pub request_timeout: Duration,
    /// How long to connect to one broker at most.
    pub connect_timeout: Duration,
    /// Pause between retries.
    pub retry_backoff: Duration,
    /// How long admin calls retry while the controller moves or starts.
    pub admin_retry_for: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap: vec!["127.0.0.1:7400".into()],
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            retry_backoff: Duration::from_millis(100),
            admin_retry_for: Duration::from_secs(10),
        }
    }
}

impl ClientConfig {
    /// Parses `host:port[,host:port]`.
    pub fn from_bootstrap(list: &str) -> Result<ClientConfig, Error> {
        let bootstrap: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if bootstrap.is_empty() {
            return Err(Error::Invalid(
                "no bootstrap address given; pass --bootstrap host:port".into(),
            ));
        }
        for a in &bootstrap {
            let ok = a
                .rsplit_once(':')
                .map(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                .unwrap_or(false);
            if !ok {
                return Err(Error::Invalid(format!(
                    "bootstrap address '{a}' is not host:port; pass e.g. --bootstrap 127.0.0.1:7400"
                )));
            }
        }
        Ok(ClientConfig {
            bootstrap,
            ..ClientConfig::default()
        })
    }
}

/// What the client knows about the cluster.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub brokers: BTreeMap<u64, BrokerInfo>,
    pub controller_id: u64,
    pub topics: BTreeMap<String, TopicMetadata>,
}

/// A handle to the cluster, cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    net: NetworkRef,
    config: ClientConfig,
    conns: tokio::sync::Mutex<BTreeMap<String, Arc<Connection>>>,
    meta: Mutex<Snapshot>,
}

/// Connections kept open at most (one per broker in practice).
const CONNECTIONS_MAX: usize = 64;

impl Client {
    /// A client on the machine's TCP stack. Does not connect yet.
    pub fn new(config: ClientConfig) -> Client {
        let net: NetworkRef = Arc::new(TcpNetwork {
            connect_timeout: config.connect_timeout,
        });
        Client::with_network(net, config)
    }

    /// A client on a given network (the simulator's, in tests).
    pub fn with_network(net: NetworkRef, config: ClientConfig) -> Client {
        Client {
            inner: Arc::new(Inner {
                net,
                config,
                conns: Default::default(),
                meta: Default::default(),
            }),
        }
    }

    /// A client that has reached the cluster once (fails clearly if no
    /// bootstrap address answers).
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        // A broker that is not ready yet is asked again for up to
        // `admin_retry_for` (see `any`): give it that long too.
        let limit = config.connect_timeout + Duration::from_secs(2) + config.admin_retry_for;
        let addrs = config.bootstrap.join(",");
        let c = Client::new(config);
        match tokio::time::timeout(limit, c.refresh(&[])).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Unreachable(format!(
                    "no broker at {addrs} answered within {} ms; check that a broker runs \
                     there or pass --bootstrap host:port",
                    limit.as_millis()
                )))
            }
        };
        Ok(c)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub fn snapshot(&self) -> Snapshot {
        self.inner
            .meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The cached connection to `addr`, opened if needed (outside the
    /// lock, so a slow connect does not hold up requests to other brokers).
    pub async fn connection(&self, addr: &str) -> Result<Arc<Connection>, Error> {
        {
            let conns = self.inner.conns.lock().await;
            if let Some(c) = conns.get(addr).filter(|c| !c.is_broken()) {
                return Ok(c.clone());
            }
        }
        let fresh = Arc::new(
            Connection::connect(&self.inner.net, addr)
                .await
                .map_err(|e| Error::Unreachable(e.to_string()))?,
        );
        let mut conns = self.inner.conns.lock().await;
        if let Some(c) = conns.get(addr).filter(|c| !c.is_broken()) {
            // Another task connected meanwhile: share its connection.
            return Ok(c.clone());
        }
        if conns.len() >= CONNECTIONS_MAX {
            conns.retain(|_, c| !c.is_broken());
            if conns.len() >= CONNECTIONS_MAX {
                conns.clear();
            }
        }
        conns.insert(addr.to_string(), fresh.clone());
        Ok(fresh)
    }

    /// The connection to broker `id`, by the address metadata gave.
    pub async fn broker(&self, id: u64) -> Result<Arc<Connection>, Error> {
        let addr = self
            .snapshot()
            .brokers
            .get(&id)
            .map(|b| b.client_addr.clone());
        match addr {
            Some(a) => self.connection(&a).await,
            None => Err(Error::Transport(format!(
                "broker {id} is not in the cluster metadata"
            ))),
        }
    }

    /// Sends a request on `conn`; a failed request as a whole is an error.
    pub async fn call(&self, conn: &Connection, body: Req) -> Result<Resp, Error> {
        let resp = conn
            .request(body, self.inner.config.request_timeout)
            .await?;
        if let Some(e) = resp.error {
            return Err(Error::broker(&e));
        }
        resp.body.ok_or_else(|| {
            Error::Transport(format!("broker {} sent an empty response", conn.addr()))
        })
    }

    /// Addresses to try for a request any broker can answer: known live
    /// brokers first, then the bootstrap list.
    fn candidates(&self) -> Vec<String> {
        let snap = self.snapshot();
        let mut out: Vec<String> = snap
            .brokers
            .values()
            .filter(|b| b.live)
            .map(|b| b.client_addr.clone())
            .collect();
        for a in &self.inner.config.bootstrap {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// Sends a request to the first broker that answers. A broker that
    /// answers BROKER_NOT_READY (just restarted, still replaying the
    /// cluster metadata) is asked again after a pause, for up to
    /// `admin_retry_for`; then its error is returned (retriable).
    pub async fn any(&self, body: Req) -> Result<Resp, Error> {
        let deadline = tokio::time::Instant::now() + self.inner.config.admin_retry_for;
        // Bounded by the deadline.
        loop {
            let mut last = String::new();
            let mut not_ready = None;
            for addr in self.candidates() {
                let conn = match self.connection(&addr).await {
                    Ok(c) => c,
                    Err(e) => {
                        last = e.to_string();
                        continue;
                    }
                };
                match self.call(&conn, body.clone()).await {
                    Ok(r) => return Ok(r),
                    Err(e) => {
                        last = e.to_string();
                        if e.code() == Some(ErrorCode::BrokerNotReady) {
                            not_ready = Some(e);
                        }
                    }
                }
            }
            match not_ready {
                Some(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Some(_) => tokio::time::sleep(self.inner.config.retry_backoff).await,
                None => {
                    return Err(Error::Unreachable(format!(
                        "cannot reach any broker at {} ({last}); check that a broker runs there \
                         or pass --bootstrap host:port",
                        self.inner.config.bootstrap.join(",")
                    )))
                }
            }
        }
    }

    /// Fetches metadata for `topics` (empty: all) and updates the cache.
    pub async fn refresh(&self, topics: &[String]) -> Result<MetadataResponse, Error> {
        let resp = self
            .any(Req::Metadata(MetadataRequest {
                topics: topics.to_vec(),
            }))
            .await?;
        let Resp::Metadata(m) = resp else {
            return Err(Error::Transport(
                "unexpected answer to a metadata request".into(),
            ));
        };
        let mut meta = self.inner.meta.lock().unwrap_or_else(|e| e.into_inner());
        if !m.brokers.is_empty() {
            meta.brokers = m.brokers.iter().map(|b| (b.id, b.clone())).collect();
        }
        meta.controller_id = m.controller_id;
        if topics.is_empty() {
            meta.topics.clear();
        }
        for t in &m.topics {
            if t.error.is_some() {
                meta.topics.remove(&t.name);
            } else {
                meta.topics.insert(t.name.clone(), t.clone());
            }
        }
        Ok(m)
    }

    /// A topic's metadata, from the cache or fetched. An unknown topic is
    /// an error naming it.
    pub async fn topic(&self, name: &str) -> Result<TopicMetadata, Error> {
        // Clone the one topic, not the whole cache: this runs on every send.
        let cached = {
            let meta = self.inner.meta.lock().unwrap_or_else(|e| e.into_inner());
            meta.topics.get(name).cloned()
        };
        if let Some(t) = cached {
            return Ok(t);
        }
        self.refresh_topic(name).await
    }

    /// How many partitions a topic has, from the cache when it is there
    /// (no clone of its metadata: the producer asks on every send).
    pub async fn partition_count(&self, name: &str) -> Result<u32, Error> {
        let cached = {
            let meta = self.inner.meta.lock().unwrap_or_else(|e| e.into_inner());
            meta.topics.get(name).map(|t| t.partitions.len() as u32)
        };
        match cached {
            Some(n) => Ok(n),
            None => Ok(self.refresh_topic(name).await?.partitions.len() as u32),
        }
    }

    /// A topic's metadata, fetched now.
    pub async fn refresh_topic(&self, name: &str) -> Result<TopicMetadata, Error> {
        let m = self.refresh(&[name.to_string()]).await?;
        let t = m.topics.into_iter().find(|t| t.name == name);
        match t {
            Some(t) if t.error.is_none() => Ok(t),
            Some(t) => Err(Error::broker(t.error.as_ref().unwrap_or(
                &crate::proto::Error {
                    code: ErrorCode::UnknownTopic as i32,
                    message: String::new(),
                    leader_id: 0,
                },
            ))),
            None => Err(Error::Broker {
                code: ErrorCode::UnknownTopic,
                message: format!(
                    "topic '{name}' does not exist; create it with `weir topic create {name}`"
                ),
            }),
        }
    }

    /// The cached leader of a partition (0 or None: unknown).
    pub fn leader(&self, topic: &str, partition: u32) -> Option<u64> {
        let snap = self.inner.meta.lock().unwrap_or_else(|e| e.into_inner());
        snap.topics
            .get(topic)?
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.leader_id)
            .filter(|l| *l != 0)
    }

    /// Records a leader learnt from a NOT_LEADER answer.
    pub fn set_leader(&self, topic: &str, partition: u32, leader: u64) {
        let mut snap = self.inner.meta.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = snap.topics.get_mut(topic) {
            if let Some(p) = t.partitions.iter_mut().find(|p| p.partition == partition) {
                p.leader_id = leader;
            }
        }
    }

    /// The connection to a partition's leader, refreshing metadata if the
    /// leader is not known.
    pub async fn leader_conn(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(u64, Arc<Connection>), Error> {
        let leader = match self.leader(topic, partition) {
            Some(l) => l,
            None => {
                self.refresh_topic(topic).await?;
                self.leader(topic, partition).ok_or_else(|| Error::Broker {
                    code: ErrorCode::LeaderNotAvailable,
                    message: format!("partition {topic}/{partition} has no leader right now"),
                })?
            }
        };
        if !self.snapshot().brokers.contains_key(&leader) {
            self.refresh(&[topic.to_string()]).await?;
        }
        Ok((leader, self.broker(leader).await?))
    }

    /// Sends an admin request to the controller leader, following
    /// NOT_CONTROLLER and retrying while a controller is elected or brokers
    /// register. `check` pulls the error out of the answer.
    pub async fn controller<F>(&self, body: Req, check: F) -> Result<Resp, Error>
    where
        F: Fn(&Resp) -> Option<crate::proto::Error>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.config.admin_retry_for;
        let mut target = self.snapshot().controller_id;
        loop {
            let attempt = async {
                let conn = if target != 0 {
                    match self.broker(target).await {
                        Ok(c) => c,
                        Err(_) => {
                            self.refresh(&[]).await?;
                            self.broker(self.snapshot().controller_id).await?
                        }
                    }
                } else {
                    self.refresh(&[]).await?;
                    let id = self.snapshot().controller_id;
                    if id == 0 {
                        return Err(Error::Broker {
                            code: ErrorCode::LeaderNotAvailable,
                            message: "no controller leader is elected yet; retry in a moment"
                                .into(),
                        });
                    }
                    self.broker(id).await?
                };
                let resp = self.call(&conn, body.clone()).await?;
                match check(&resp) {
                    Some(e) => Err(Error::Broker {
                        code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unknown),
                        message: if e.code == ErrorCode::NotController as i32 {
                            format!("{}", e.leader_id)
                        } else {
                            e.message
                        },
                    }),
                    None => Ok(resp),
                }
            };
            let err = match attempt.await {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            let retry = match &err {
                Error::Broker {
                    code: ErrorCode::NotController,
                    message,
                } => {
                    target = message.parse().unwrap_or(0);
                    true
                }
                Error::Broker {
                    code: ErrorCode::InvalidReplicationFactor,
                    message,
                } => message.contains("no broker is live"),
                // Nobody answers at all: say so now rather than hang.
                Error::Unreachable(_) => false,
                e => {
                    target = 0;
                    e.retriable()
                }
            };
            if !retry || tokio::time::Instant::now() >= deadline {
                if let Error::Broker {
                    code: ErrorCode::NotController,
                    ..
                } = err
                {
                    return Err(Error::Transport(
                        "the controller leader kept moving; retry".into(),
                    ));
                }
                return Err(err);
            }
            tokio::time::sleep(self.inner.config.retry_backoff).await;
        }
    }
}
