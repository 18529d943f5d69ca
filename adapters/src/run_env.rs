//! What every real-server run sets up, injects through and tears down, whatever protocol it
//! checks: a run id, its own PostgreSQL schema and Redis key prefix, its own `redis-server`
//! when asked to spawn one (the only Redis a run may restart), the fault proxies in front of
//! Redis and PostgreSQL when the plan has proxy faults, and the admin connections that seed
//! and read back. [`RunEnv::finish`] drops the schema and keys (unless kept) and stops the
//! run's Redis, whatever the run's outcome.
//!
//! [`Injector`] carries out the fault kinds that act on servers and connections (a Redis
//! restart, a latency spike, stalled and cut connections); each run carries out the kinds
//! that act on its own processes (worker kills, kills after a claim) itself.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::AdapterError;
use crate::check::{RedisTarget, target_of, with_authority};
use crate::fault_plan::{FaultCounts, FaultKind, FaultOptions};
use crate::postgres::PgSql;
use crate::proxy::FaultProxy;
use crate::redis_kv::RedisKv;
use crate::redis_server::OwnRedis;

/// A real-server run's servers, names and admin connections.
pub(crate) struct RunEnv {
    /// The run's PostgreSQL schema (`rl_check_<run id>`).
    pub(crate) schema: String,
    /// The run's Redis key prefix (`racelab:check:<run id>:`).
    pub(crate) prefix: String,
    /// The URL the workers reach Redis at: through the fault proxy when there is one.
    pub(crate) worker_redis: String,
    /// The URL the workers reach PostgreSQL at: through the fault proxy when there is one.
    pub(crate) worker_pg: String,
    /// Redis as the run's admin sees it (never through a proxy).
    pub(crate) redis_url: String,
    /// The admin's Redis connection (for clean-up).
    pub(crate) admin_kv: RedisKv,
    /// The admin's PostgreSQL session in the run's schema (seeding, reading back).
    pub(crate) admin_pg: PgSql,
    /// Server and connection faults.
    pub(crate) injector: Injector,
}

impl RunEnv {
    /// Starts a run named `<label>_<pid>_<random>_<n>` (`n` counts this process's runs, so
    /// two runs of one seed never share a schema): its Redis if `redis` says spawn, the fault
    /// proxies if `faults` needs them, the admin connections. On an error, whatever was
    /// started is stopped again.
    pub(crate) async fn start(
        label: &str,
        rng: &mut ChaCha8Rng,
        redis: &RedisTarget,
        pg_url: &str,
        faults: &FaultOptions,
    ) -> Result<RunEnv, AdapterError> {
        let run_id = format!(
            "{label}_{}_{}_{}",
            std::process::id(),
            rng.random_range(0..1_000_000_000u64),
            crate::fault_plan::next_run()
        );
        let mut own_redis = match redis {
            RedisTarget::Spawn { binary } => Some(OwnRedis::start(binary).await?),
            RedisTarget::Url(_) => None,
        };
        let redis_url = match (redis, &own_redis) {
            (_, Some(own)) => own.url(),
            (RedisTarget::Url(url), None) => url.clone(),
            (RedisTarget::Spawn { .. }, None) => {
                return Err(AdapterError::InvalidInput("no Redis".into()));
            }
        };
        let schema = format!("rl_check_{run_id}");
        let prefix = format!("racelab:check:{run_id}:");
        let connected = Self::connect(&redis_url, pg_url, &schema, &prefix, faults).await;
        let (admin_kv, admin_pg, proxies) = match connected {
            Ok(c) => c,
            Err(e) => {
                if let Some(own) = &mut own_redis {
                    own.stop().await;
                }
                return Err(e);
            }
        };
        let (worker_redis, worker_pg) = match &proxies {
            Some((r, p)) => (
                with_authority(&redis_url, &r.addr().to_string())?,
                with_authority(pg_url, &p.addr().to_string())?,
            ),
            None => (redis_url.clone(), pg_url.to_string()),
        };
        Ok(RunEnv {
            schema,
            prefix,
            worker_redis,
            worker_pg,
            redis_url,
            admin_kv,
            admin_pg,
            injector: Injector {
                own_redis,
                proxies,
                spike_until: None,
            },
        })
    }

    async fn connect(
        redis_url: &str,
        pg_url: &str,
        schema: &str,
        prefix: &str,
        faults: &FaultOptions,
    ) -> Result<(RedisKv, PgSql, Option<(FaultProxy, FaultProxy)>), AdapterError> {
        let admin_kv = RedisKv::connect(redis_url, prefix).await?;
        let admin_pg = PgSql::connect(pg_url, schema).await?;
        let proxies = if faults.needs_proxy() {
            let r = FaultProxy::start(target_of(redis_url, 6379).await?).await?;
            let p = FaultProxy::start(target_of(pg_url, 5432).await?).await?;
            Some((r, p))
        } else {
            None
        };
        Ok((admin_kv, admin_pg, proxies))
    }

    /// Cleans up whatever happened (best effort: the run's own outcome is what matters, and
    /// a server that went away has nothing left to clean): drops the schema and the keys
    /// unless `keep_data`, stops the run's own Redis, closes the proxies.
    pub(crate) async fn finish(mut self, keep_data: bool) {
        if !keep_data {
            let _ = self.admin_pg.drop_schema().await;
            let _ = self.admin_kv.clean().await;
        }
        if let Some(own) = &mut self.injector.own_redis {
            own.stop().await;
        }
    }
}

/// The shape of a run's connection faults.
pub(crate) struct ConnectionFaults {
    /// How long a latency spike lasts.
    pub(crate) spike: std::time::Duration,
    /// Every how many connections one is stalled.
    pub(crate) stall_every: u64,
    /// How long a stalled connection is held still.
    pub(crate) stall_hold: std::time::Duration,
    /// Every how many connections one is cut.
    pub(crate) cut_every: u64,
}

/// The server and connection faults of a run: its own Redis (restartable) and the proxies.
pub(crate) struct Injector {
    own_redis: Option<OwnRedis>,
    proxies: Option<(FaultProxy, FaultProxy)>,
    spike_until: Option<std::time::Instant>,
}

impl Injector {
    /// Restarts the run's own Redis (every key lost); false when the run uses a shared Redis,
    /// which is never restarted.
    pub(crate) async fn restart_redis(&mut self) -> Result<bool, AdapterError> {
        let Some(own) = self.own_redis.as_mut() else {
            return Ok(false);
        };
        own.restart().await?;
        Ok(true)
    }

    /// [`Injector::restart_redis`], calling `dead` between the old server's exit and the
    /// new one's start (where a run records the restart: every write applied before it was
    /// lost, none after it).
    pub(crate) async fn restart_redis_marking(
        &mut self,
        dead: impl FnOnce(),
    ) -> Result<bool, AdapterError> {
        let Some(own) = self.own_redis.as_mut() else {
            return Ok(false);
        };
        own.restart_marking(dead).await?;
        Ok(true)
    }

    /// Carries out a connection fault through the proxies: a latency spike (2 to 20 ms on
    /// every proxied connection for `shape.spike`), stalls (every `shape.stall_every`-th
    /// connection from a random offset held still for `shape.stall_hold`) or cuts (every
    /// `shape.cut_every`-th connection). The connections touched are added to `counts`.
    /// False when it cannot be done now: no proxies, no connection picked, or a kind that is
    /// not a connection fault ([`FaultKind::needs_proxy`]).
    pub(crate) fn connection_fault(
        &mut self,
        kind: FaultKind,
        rng: &mut ChaCha8Rng,
        shape: &ConnectionFaults,
        counts: &mut FaultCounts,
    ) -> bool {
        let Some((rp, pp)) = &self.proxies else {
            return false;
        };
        match kind {
            FaultKind::LatencySpike => {
                let ms = rng.random_range(2..=20);
                rp.set_latency(std::time::Duration::from_millis(ms));
                pp.set_latency(std::time::Duration::from_millis(ms));
                self.spike_until = Some(std::time::Instant::now() + shape.spike);
                true
            }
            FaultKind::StalledConnection => {
                let offset = rng.random::<u64>();
                let n = rp.stall(shape.stall_every, offset, shape.stall_hold)
                    + pp.stall(shape.stall_every, offset, shape.stall_hold);
                counts.stalled_connections += n;
                n > 0
            }
            FaultKind::CutConnection => {
                let offset = rng.random::<u64>();
                let n = rp.cut(shape.cut_every, offset) + pp.cut(shape.cut_every, offset);
                counts.cut_connections += n;
                n > 0
            }
            _ => false,
        }
    }

    /// Ends a latency spike whose time is up; call it on every look at the run.
    pub(crate) fn end_spike_if_due(&mut self) {
        if self
            .spike_until
            .is_some_and(|t| std::time::Instant::now() >= t)
        {
            self.spike_until = None;
            if let Some((rp, pp)) = &self.proxies {
                rp.set_latency(std::time::Duration::ZERO);
                pp.set_latency(std::time::Duration::ZERO);
            }
        }
    }

    /// Ends every connection fault (latency, stalls) for good: the run's faults are over.
    pub(crate) fn heal(&mut self) {
        self.spike_until = None;
        if let Some((rp, pp)) = &self.proxies {
            rp.heal();
            pp.heal();
        }
    }
}
