//! One running wasm module: a long-lived instance and the loop that feeds it.
//!
//! The loop waits for whichever comes first: a stop request, a direct method call, a change of
//! the module's desired properties, its timer, or an input from its hub queue; it calls the
//! matching export, one call at a time, each under a deadline; then it commits what the call sent
//! to the hub, together with the ack of the input that caused it.
//!
//! Deadlines: every call gets `CallTimeoutMs` (init gets `InitTimeoutMs`). The epoch ticker
//! checks the deadline every 10 ms of guest execution and yields to the executor in between, so
//! a long call never holds a runtime thread; time blocked in a host call is bounded by a timer
//! around the whole call.
//!
//! A trap, a deadline overrun or a memory-cap hit ends the instance: the module exits with
//! [`EXIT_TRAP`], [`EXIT_DEADLINE`] or [`EXIT_MEMORY`], the input it was handling goes back to
//! its queue, and the agent restarts the module by its restart policy. An input that ends the
//! module [`POISON_ATTEMPTS`] times is dropped (and logged) instead of being offered a fourth
//! time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::sleep_until;
use verge_hub::{Commit, Consumer, Entry, MethodCall, MethodListener, MethodResponse, Target};
use verge_runtime::{Exit, ModuleContext, ModuleControl, ModuleHandle, ModuleSpec, Stream};
use verge_twin::DesiredWatch;
use wasmtime::component::{InstancePre, ResourceTable};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{I32Exit, WasiCtx};

use crate::bindings::exports::verge::module::handlers::{
    InputError, MethodResponse as GuestResponse,
};
use crate::bindings::{Module, ModulePre};
use crate::engine::TICK;
use crate::host::{CallLimits, Host, MemoryCap, TimerRequest};
use crate::message::GuestMessage;
use crate::options::ModuleOptions;
use crate::stdio::LogStream;

/// Exit code of a module whose call trapped (as a process killed by SIGABRT).
pub const EXIT_TRAP: i64 = 134;
/// Exit code of a module whose call overran its deadline (as `timeout(1)`).
pub const EXIT_DEADLINE: i64 = 124;
/// Exit code of a module that hit its memory cap (as a container killed for memory).
pub const EXIT_MEMORY: i64 = 137;
/// Exit code of a module whose `init` returned an error.
pub const EXIT_INIT_ERROR: i64 = 1;
/// Deliveries of one input that may end the module before the input is dropped.
pub const POISON_ATTEMPTS: u32 = 3;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Why a call ended the instance.
#[derive(Debug)]
enum Failure {
    Trap(String),
    Deadline(Duration),
    Memory(u64),
    Exit(i32),
}

impl Failure {
    fn exit(&self, during: &str) -> Exit {
        match self {
            Self::Trap(msg) => Exit::new(EXIT_TRAP, format!("trapped in {during}: {msg}")),
            Self::Deadline(limit) => Exit::new(
                EXIT_DEADLINE,
                format!("{during} overran its deadline of {limit:?}"),
            ),
            Self::Memory(limit) => Exit::new(
                EXIT_MEMORY,
                format!("{during} hit the memory limit of {limit} bytes"),
            ),
            Self::Exit(code) => Exit::new(
                i64::from(*code),
                format!("exited with code {code} in {during}"),
            ),
        }
    }
}

fn classify(error: wasmtime::Error, host: &Host, limit: Duration) -> Failure {
    if host.memory.hit {
        Failure::Memory(host.memory.limit())
    } else if host.deadline_hit {
        Failure::Deadline(limit)
    } else if let Some(exit) = error.downcast_ref::<I32Exit>() {
        Failure::Exit(exit.0)
    } else {
        host.log.push(Stream::Runtime, format!("trap: {error:?}"));
        Failure::Trap(error.root_cause().to_string())
    }
}

/// What the module runs with.
pub(crate) struct Setup {
    pub pre: InstancePre<Host>,
    pub options: ModuleOptions,
    pub limits: CallLimits,
}

struct Instance {
    store: Store<Host>,
    module: Module,
    call_timeout: Duration,
}

/// Start the module: instantiate it and call `init`, then run its loop on a task. Failures to
/// instantiate or initialise come back as an exit on the handle.
pub(crate) async fn start(
    engine: &wasmtime::Engine,
    spec: &ModuleSpec,
    context: ModuleContext,
    setup: Setup,
) -> ModuleHandle {
    let (handle, control) = ModuleHandle::new();
    let log = context.log.clone();
    // Open the module's connections before `init`, so nothing sent meanwhile is missed.
    let target = Target::Module(Arc::from(spec.name.as_str()));
    let consumer = match context.hub.consume(&target) {
        Ok(c) => c,
        Err(e) => {
            control.exited(Exit::new(EXIT_INIT_ERROR, e.to_string()));
            return handle;
        }
    };
    let methods = context.hub.methods().listen(&context.identity);
    let desired = context.twins.watch_desired(&spec.name);
    match Instance::create(engine, spec, context, setup).await {
        Ok(instance) => {
            log.push(Stream::Runtime, "started");
            tokio::spawn(instance.run(control, consumer, methods, desired));
        }
        Err(exit) => {
            log.push(
                Stream::Runtime,
                format!("failed to start: {}", exit.description),
            );
            control.exited(exit);
        }
    }
    handle
}

impl Instance {
    async fn create(
        engine: &wasmtime::Engine,
        spec: &ModuleSpec,
        context: ModuleContext,
        setup: Setup,
    ) -> Result<Self, Exit> {
        let Setup {
            pre,
            options,
            limits,
        } = setup;
        let mut env = context.environment(spec);
        env.extend(options.env.iter().cloned());
        let mut wasi = WasiCtx::builder();
        wasi.envs(&env)
            .args(&[spec.name.as_str()])
            .stdout(LogStream::new(context.log.clone(), Stream::Stdout))
            .stderr(LogStream::new(context.log.clone(), Stream::Stderr));
        let host = Host {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            config: env.iter().cloned().collect(),
            memory: MemoryCap::new(options.memory_limit),
            limits,
            identity: context.identity.clone(),
            hub: context.hub,
            twins: context.twins,
            log: context.log,
            outbox: Vec::new(),
            outputs: Vec::new(),
            timer: TimerRequest::default(),
            body_bytes_read: 0,
            deadline: Instant::now(),
            deadline_hit: false,
        };
        let mut store = Store::new(engine, host);
        store.limiter(|host| &mut host.memory);
        store.epoch_deadline_callback(|mut cx| {
            let host = cx.data_mut();
            if Instant::now() >= host.deadline {
                host.deadline_hit = true;
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        let init_timeout = options.init_timeout;
        let pre = ModulePre::new(pre)
            .map_err(|e| Exit::new(EXIT_INIT_ERROR, format!("cannot link the component: {e:#}")))?;
        store.data_mut().begin_call(init_timeout);
        store.set_epoch_deadline(1);
        let instantiated =
            tokio::time::timeout(init_timeout + TICK * 5, pre.instantiate_async(&mut store)).await;
        let module = match instantiated {
            Err(_) => return Err(Failure::Deadline(init_timeout).exit("instantiation")),
            Ok(Err(e)) => return Err(classify(e, store.data(), init_timeout).exit("instantiation")),
            Ok(Ok(module)) => module,
        };
        let mut instance = Self {
            store,
            module,
            call_timeout: options.call_timeout,
        };
        let init = instance
            .call(init_timeout, async |m, s| {
                m.verge_module_handlers().call_init(s).await
            })
            .await;
        match init {
            Err(failure) => Err(failure.exit("init")),
            Ok(Err(e)) => Err(Exit::new(EXIT_INIT_ERROR, format!("init failed: {e:?}"))),
            // What init sent is committed once the loop runs (it needs no ack).
            Ok(Ok(())) => Ok(instance),
        }
    }

    /// Call into the guest under a deadline.
    async fn call<T>(
        &mut self,
        limit: Duration,
        f: impl AsyncFnOnce(&Module, &mut Store<Host>) -> wasmtime::Result<T>,
    ) -> Result<T, Failure> {
        self.store.data_mut().begin_call(limit);
        self.store.set_epoch_deadline(1);
        let result = tokio::time::timeout(limit + TICK * 5, f(&self.module, &mut self.store)).await;
        match result {
            Err(_) => Err(Failure::Deadline(limit)),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(classify(e, self.store.data(), limit)),
        }
    }

    fn log(&self, stream: Stream, text: String) {
        self.store.data().log.push(stream, text);
    }

    /// Commit what the last call sent, with `ack`. The commit is not awaited to disk: commits
    /// reach the store in order, so the next input may go on while this one syncs.
    async fn commit(&mut self, ack: Option<verge_hub::Ack>, control: &mut ModuleControl) -> Sent {
        let messages = std::mem::take(&mut self.store.data_mut().outbox);
        if messages.is_empty() && ack.is_none() {
            return Sent::Done;
        }
        let n = messages.len();
        let hub = Arc::clone(&self.store.data().hub);
        let submitted = tokio::select! {
            submitted = hub.submit(Commit { messages, ack, ..Commit::default() }) => submitted,
            _ = control.stop_requested() => return Sent::Stopped,
        };
        match submitted {
            Ok(_) => Sent::Done,
            Err(e) => {
                self.log(Stream::Runtime, format!("{n} messages not sent: {e}"));
                Sent::Refused
            }
        }
    }

    async fn run(
        mut self,
        mut control: ModuleControl,
        mut consumer: Consumer,
        mut methods: MethodListener,
        mut desired: DesiredWatch,
    ) {
        let twins = Arc::clone(&self.store.data().twins);
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut retry_delay = FIRST_RETRY;
        // What init sent.
        let exit = if self.commit(None, &mut control).await != Sent::Stopped {
            loop {
                let timer = self.store.data().timer.0;
                let step = tokio::select! {
                    biased;
                    _ = control.stop_requested() => break Exit::new(0, "stopped"),
                    Some(call) = methods.next() => self.method(call).await,
                    Some(patch) = desired.changed(&twins) => self.desired_changed(&patch).await,
                    _ = sleep_until(timer.map_or_else(tokio::time::Instant::now, Into::into)), if timer.is_some() => {
                        self.store.data_mut().timer = TimerRequest(None);
                        self.call(self.call_timeout, async |m, s| m.verge_module_handlers().call_on_timer(s).await)
                            .await
                            .map(|r| r.map_err(|e| self.log(Stream::Stderr, format!("on-timer failed: {e:?}"))).is_ok())
                            .map_err(|f| f.exit("on-timer"))
                    }
                    _ = sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                        retry_at = None;
                        continue;
                    }
                    entry = consumer.next(), if retry_at.is_none() => {
                        match self.input(entry, &consumer).await {
                            Ok(Handled::Done) => {
                                retry_delay = FIRST_RETRY;
                                Ok(true)
                            }
                            Ok(Handled::Committed(ack)) => {
                                let seq = ack.seq();
                                match self.commit(Some(ack), &mut control).await {
                                    Sent::Stopped => break Exit::new(0, "stopped"),
                                    Sent::Done => retry_delay = FIRST_RETRY,
                                    // The store is full: the input waits its turn again.
                                    Sent::Refused => {
                                        consumer.nack(seq);
                                        retry_at = Some(tokio::time::Instant::now() + retry_delay);
                                        retry_delay = (retry_delay * 2).min(MAX_RETRY);
                                    }
                                }
                                continue;
                            }
                            Ok(Handled::Retry) => {
                                retry_at = Some(tokio::time::Instant::now() + retry_delay);
                                retry_delay = (retry_delay * 2).min(MAX_RETRY);
                                Ok(true)
                            }
                            Err(exit) => Err(exit),
                        }
                    }
                };
                match step {
                    Err(exit) => break exit,
                    // The call succeeded: send what it sent.
                    Ok(true) => {
                        if self.commit(None, &mut control).await == Sent::Stopped {
                            break Exit::new(0, "stopped");
                        }
                    }
                    // The call returned an error: what it sent is discarded.
                    Ok(false) => self.store.data_mut().outbox.clear(),
                }
            }
        } else {
            Exit::new(0, "stopped")
        };
        self.log(
            Stream::Runtime,
            format!("exited ({}): {}", exit.code, exit.description),
        );
        // Dropping the consumer returns an input that was being handled to the queue.
        drop(consumer);
        control.exited(exit);
    }

    async fn method(&mut self, call: MethodCall) -> Result<bool, Exit> {
        let (name, payload) = (call.name.clone(), call.payload.clone());
        let result = self
            .call(self.call_timeout, async |m, s| {
                m.verge_module_handlers()
                    .call_invoke_method(s, &name, &payload)
                    .await
            })
            .await;
        match result {
            Ok(Ok(GuestResponse { status, payload })) => {
                call.respond(MethodResponse { status, payload });
                Ok(true)
            }
            Ok(Err(e)) => {
                let payload = serde_json::json!({ "message": format!("{e:?}") }).to_string();
                call.respond(MethodResponse {
                    status: 500,
                    payload,
                });
                Ok(false)
            }
            Err(failure) => {
                let exit = failure.exit(&format!("method {name}"));
                let payload = serde_json::json!({ "message": exit.description }).to_string();
                call.respond(MethodResponse {
                    status: 500,
                    payload,
                });
                Err(exit)
            }
        }
    }

    async fn desired_changed(&mut self, patch: &serde_json::Value) -> Result<bool, Exit> {
        let text = patch.to_string();
        let result = self
            .call(self.call_timeout, async |m, s| {
                m.verge_module_handlers()
                    .call_desired_changed(s, &text)
                    .await
            })
            .await
            .map_err(|f| f.exit("desired-changed"))?;
        Ok(result
            .map_err(|e| self.log(Stream::Stderr, format!("desired-changed failed: {e:?}")))
            .is_ok())
    }

    async fn input(&mut self, entry: Entry, consumer: &Consumer) -> Result<Handled, Exit> {
        let input = entry.input.clone().unwrap_or_else(|| Arc::from(""));
        if entry.attempts >= POISON_ATTEMPTS {
            self.log(
                Stream::Runtime,
                format!(
                    "dropped a message on input {input:?}: it ended the module {} times",
                    entry.attempts
                ),
            );
            consumer.ack(entry.seq);
            return Ok(Handled::Done);
        }
        let guest = GuestMessage::received(
            Arc::clone(&entry.message),
            entry.input.clone(),
            entry.enqueued,
        );
        let handle = self
            .store
            .data_mut()
            .table
            .push(guest)
            .map_err(|e| Exit::new(EXIT_TRAP, format!("resource table: {e}")))?;
        let result = self
            .call(self.call_timeout, async |m, s| {
                m.verge_module_handlers()
                    .call_handle_input(s, &input, handle)
                    .await
            })
            .await
            .map_err(|f| f.exit(&format!("handle-input({input})")))?;
        match result {
            Ok(()) => Ok(Handled::Committed(consumer.ack_token(entry.seq))),
            Err(InputError::Reject(reason)) => {
                self.log(
                    Stream::Stderr,
                    format!("rejected a message on {input:?}: {reason}"),
                );
                self.store.data_mut().outbox.clear();
                consumer.ack(entry.seq);
                Ok(Handled::Done)
            }
            Err(InputError::Retry(reason)) => {
                self.log(
                    Stream::Stderr,
                    format!("will retry a message on {input:?}: {reason}"),
                );
                self.store.data_mut().outbox.clear();
                consumer.nack(entry.seq);
                Ok(Handled::Retry)
            }
        }
    }
}

/// What became of an input.
enum Handled {
    /// Consumed already (rejected, or dropped as poison).
    Done,
    /// Handled: commit the outbox with this ack.
    Committed(verge_hub::Ack),
    /// The module asked to retry it later.
    Retry,
}

/// What became of a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    /// Queued (and on its way to disk).
    Done,
    /// Refused by a full store; the messages are dropped, an input is offered again.
    Refused,
    /// The module is being stopped.
    Stopped,
}
