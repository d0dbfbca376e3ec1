//! Talking to Redis: running the script under the deadline, probing, and
//! learning a Cluster's topology.

use super::*;

/// Which of the backend's scripts to run.
#[derive(Clone, Copy)]
pub(super) enum Lua {
    /// `script.lua`: a decision.
    Decide,
    /// `settle.lua`: a settlement.
    Settle,
}

impl Inner {
    /// Runs the decide script (`script.lua`), carrying `carried`'s
    /// settlements if any (they apply first).
    pub(super) async fn eval(
        &self,
        key: &[u8],
        args: &[u64],
        units: &[&str],
        carried: Option<&Held>,
    ) -> redis::RedisResult<Vec<i64>> {
        let mut cmd = self.evalsha(Lua::Decide, 1);
        cmd.arg(key);
        let (Some(held), [wait, _, rest @ ..]) = (carried, args) else {
            for a in args {
                cmd.arg(*a);
            }
            for u in units {
                cmd.arg(*u);
            }
            return self.eval_cmd(Lua::Decide, &cmd).await;
        };
        // A lone debt of this very quota: its short form (see `script.lua`).
        let now = self.clock.now();
        if let (&[t, _, _], Some((debt_t, extra, ago))) = (rest, held.lone_debt(now))
            && t > 0
            && debt_t == t
        {
            cmd.arg(*wait).arg("d");
            for a in rest {
                cmd.arg(*a);
            }
            cmd.arg(extra.saturating_mul(t)).arg(ago);
            return self.eval_cmd(Lua::Decide, &cmd).await;
        }
        let m = u64::try_from(held.len()).unwrap_or(u64::MAX);
        cmd.arg(*wait).arg(m.saturating_add(1));
        for a in rest {
            cmd.arg(*a);
        }
        for u in units {
            cmd.arg(*u);
        }
        held.write(&mut cmd, now);
        self.eval_cmd(Lua::Decide, &cmd).await
    }

    /// `EVALSHA` of `lua` on `keys` keys: the command to add them and the
    /// arguments to.
    pub(super) fn evalsha(&self, lua: Lua, keys: usize) -> redis::Cmd {
        let script = match lua {
            Lua::Decide => &self.script,
            Lua::Settle => &self.settle_script,
        };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(keys);
        cmd
    }

    /// Runs `cmd`, an [`evalsha`](Self::evalsha) of `lua` with its keys and
    /// arguments, on the backend's connection.
    pub(super) async fn eval_cmd(
        &self,
        lua: Lua,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<Vec<i64>> {
        match &self.conn {
            Conn::Client { client, manager } => {
                let manager = manager
                    .get_or_try_init(|| async {
                        // No retries inside the manager: a reconnection is
                        // one attempt, made at once when a call finds the
                        // connection broken. Retrying is the probe task's
                        // job; a retry that sleeps would make a probe wait
                        // past its deadline while Redis is already back.
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(Duration::from_secs(1)))
                            .set_number_of_retries(0);
                        ConnectionManager::new_lazy_with_config(client.clone(), config)
                    })
                    .await?;
                run(cmd, lua, &mut manager.clone()).await
            }
            Conn::Manager(manager) => run(cmd, lua, &mut manager.clone()).await,
            Conn::Cluster { client, conn } => {
                let conn = conn
                    .get_or_try_init(|| async {
                        let mut conn = client.get_async_connection().await?;
                        // Learn which master holds which slot, for the
                        // health of each; without it, one health for all.
                        let _ = self.learn_topology(&mut conn).await;
                        Ok::<_, redis::RedisError>(conn)
                    })
                    .await?;
                run(cmd, lua, &mut conn.clone()).await
            }
        }
    }

    /// Asks Redis about `key` without changing anything (a peek of one
    /// request at 1 per second), within the deadline. A first failure
    /// that is not a timeout is tried once more: the connection hands the
    /// last failed connection attempt to the first call after it, and
    /// starts a new attempt only then, so the second call is the one that
    /// sees whether Redis answers now.
    pub(super) async fn probe(&self, key: &[u8]) -> bool {
        let args = [0, 0, 1_000_000, 1, 1];
        for attempt in 0..2 {
            match tokio::time::timeout(self.deadline, self.eval(key, &args, &[], None)).await {
                Ok(Ok(reply)) => return reply.len() >= 7,
                Ok(Err(e)) if attempt == 0 && !e.is_timeout() => {}
                _ => return false,
            }
        }
        false
    }

    /// Learns again which master holds which slot (on a Cluster, at most
    /// once a second).
    pub(super) async fn refresh_topology(&self) {
        let Some(learned_at) = self.nodes.learned_at() else {
            return;
        };
        if learned_at != 0 && self.clock.now().saturating_sub(learned_at) < 1_000_000_000 {
            return;
        }
        if let Conn::Cluster { conn, .. } = &self.conn
            && let Some(conn) = conn.get()
        {
            let _ = self.learn_topology(&mut conn.clone()).await;
        }
    }

    /// Reads `CLUSTER SLOTS` into the health map, within the deadline.
    pub(super) async fn learn_topology(&self, conn: &mut ClusterConnection) -> Result<(), ()> {
        let reply: redis::Value = tokio::time::timeout(
            self.deadline,
            redis::cmd("CLUSTER").arg("SLOTS").query_async(conn),
        )
        .await
        .map_err(drop)?
        .map_err(drop)?;
        let ranges = slot_ranges(&reply).ok_or(())?;
        self.nodes.learn(&ranges, self.clock.now());
        Ok(())
    }
}

/// Sends `cmd` (an `EVALSHA`); on `NOSCRIPT` (a restarted or flushed
/// server) sends the script itself with the same keys and arguments, in
/// one round trip (`EVAL` also caches it for the next `EVALSHA`): the
/// first did not run, so nothing is charged twice.
async fn run(
    cmd: &redis::Cmd,
    lua: Lua,
    conn: &mut impl redis::aio::ConnectionLike,
) -> redis::RedisResult<Vec<i64>> {
    match cmd.query_async(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            let mut eval = redis::cmd("EVAL");
            eval.arg(match lua {
                Lua::Decide => SCRIPT,
                Lua::Settle => SETTLE_SCRIPT,
            });
            for arg in cmd.args_iter().skip(2) {
                if let redis::Arg::Simple(bytes) = arg {
                    eval.arg(bytes);
                }
            }
            eval.query_async(conn).await
        }
        r => r,
    }
}

/// The `(first slot, last slot, master address)` ranges of a `CLUSTER
/// SLOTS` reply.
pub(super) fn slot_ranges(reply: &redis::Value) -> Option<Vec<(u16, u16, String)>> {
    use redis::Value;
    let Value::Array(ranges) = reply else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(i) => u16::try_from(*i).ok(),
        _ => None,
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let [first, last, Value::Array(master), ..] = fields.as_slice() else {
            return None;
        };
        let host = match master.first()? {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let port = master.get(1).and_then(int)?;
        out.push((int(first)?, int(last)?, format!("{host}:{port}")));
    }
    Some(out)
}

pub(super) fn error_kind(e: &redis::RedisError) -> BackendErrorKind {
    if e.is_timeout() {
        BackendErrorKind::Timeout
    } else if e.is_connection_refusal() {
        BackendErrorKind::Refused
    } else if e.is_io_error() || e.is_connection_dropped() {
        BackendErrorKind::Io
    } else {
        match e.kind() {
            redis::ErrorKind::Server(
                redis::ServerErrorKind::ResponseError
                | redis::ServerErrorKind::NoScript
                | redis::ServerErrorKind::ExecAbort,
            )
            | redis::ErrorKind::UnexpectedReturnType
            | redis::ErrorKind::Parse => BackendErrorKind::Script,
            redis::ErrorKind::ClusterConnectionNotFound => BackendErrorKind::Io,
            _ => BackendErrorKind::Other,
        }
    }
}
