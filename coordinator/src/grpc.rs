//! Thin gRPC handlers: decode, call the coordinator handle, map errors.

use flotilla_wire::status::{status_of, OrStatus};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flotilla_shared::auth::{tokens_match, TOKEN_METADATA_KEY};
use flotilla_shared::config::parse_experiment_with;
use flotilla_shared::protocol::{FromWorker, ToWorker, Welcome};
use flotilla_shared::workdir::{bundle_hash, BundleFile};
use flotilla_shared::Error;
use flotilla_wire::proto;
use prost::Message;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::actor::CoordinatorHandle;
use crate::state::{Submission, WorkdirRef};

/// How long a new connection may take to say Hello.
const HELLO_DEADLINE: Duration = Duration::from_secs(10);

pub struct WorkerApi {
    pub handle: CoordinatorHandle,
    pub token: Arc<str>,
    pub heartbeat_interval: Duration,
    pub lease_timeout: Duration,
    /// A worker's claims on the response cache end with its session.
    pub cache: Arc<crate::cache::ResponseCache>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn refused(who: &str) -> Status {
    Status::unauthenticated(format!(
        "{who} presented a token that does not match the coordinator's; use the same --token-file (or FLOTILLA_TOKEN_FILE) as the coordinator"
    ))
}

#[tonic::async_trait]
impl proto::worker_service_server::WorkerService for WorkerApi {
    type ConnectStream = BoxStream<proto::CoordinatorMessage>;

    async fn connect(
        &self,
        request: Request<Streaming<proto::WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_DEADLINE, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10 s"))??;
        let Some(Ok(FromWorker::Hello(hello))) = first.map(FromWorker::try_from) else {
            return Err(Status::invalid_argument(
                "the first message of a worker session must be a valid Hello",
            ));
        };
        if !tokens_match(&self.token, &hello.token) {
            warn!(worker = hello.name, peer, "worker refused: wrong token");
            return Err(refused(&format!("worker '{}'", hello.name)));
        }
        if hello.name.is_empty() || hello.slots == 0 {
            return Err(Status::invalid_argument(
                "Hello needs a worker name and at least one slot",
            ));
        }
        let (outbound, outbound_stream) = tokio::sync::mpsc::unbounded_channel();
        outbound
            .send(ToWorker::Welcome(Welcome {
                worker_id: hello.name.clone(),
                heartbeat_interval: self.heartbeat_interval,
                lease_timeout: self.lease_timeout,
            }))
            .expect("receiver is alive");
        let (name, slots) = (hello.name.clone(), hello.slots);
        let session = self
            .handle
            .worker_hello(hello, outbound)
            .await
            .map_err(status_of)?;
        info!(worker = name, slots, peer, "worker joined");
        let name: Arc<str> = name.into();
        let handle = self.handle.clone();
        let cache = self.cache.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(message)) => match decode_message(message) {
                        Ok(message) => handle.worker_message(name.clone(), session, message),
                        Err(e) => {
                            warn!(worker = %name, error = %e, "malformed message from worker, ignored")
                        }
                    },
                    Ok(None) => break,
                    Err(status) => {
                        info!(worker = %name, error = %status.message(), "worker connection broke");
                        break;
                    }
                }
            }
            info!(worker = %name, "worker disconnected");
            cache.release_worker(&name);
            handle.worker_gone(name, session);
        });
        let messages = UnboundedReceiverStream::new(outbound_stream)
            .map(|message| Ok(proto::CoordinatorMessage::from(message)));
        Ok(Response::new(Box::pin(messages)))
    }

    async fn fetch_workdir(
        &self,
        request: Request<proto::FetchWorkdirRequest>,
    ) -> Result<Response<proto::WorkdirBundle>, Status> {
        let request = request.into_inner();
        if !tokens_match(&self.token, &request.token) {
            return Err(refused("a workdir request"));
        }
        let bytes = self
            .handle
            .load_workdir(request.hash.clone())
            .await
            .or_status()?
            .ok_or_else(|| Status::not_found(format!("no workdir with hash {}", request.hash)))?;
        let bundle = proto::WorkdirBundle::decode(bytes.as_slice())
            .map_err(|e| Status::internal(format!("stored workdir is corrupt: {e}")))?;
        Ok(Response::new(bundle))
    }
}

/// A worker's message after its Hello; a second Hello is a protocol error.
fn decode_message(message: proto::WorkerMessage) -> Result<FromWorker, Error> {
    match FromWorker::try_from(message)? {
        FromWorker::Hello(_) => Err(Error::Protocol("Hello sent twice".into())),
        message => Ok(message),
    }
}

impl ControlApi {
    async fn submit_reply(
        &self,
        name: String,
        outcome: crate::state::Submitted,
    ) -> Result<Response<proto::SubmitReply>, Status> {
        let status = self.handle.status(Some(name.clone())).await.or_status()?;
        let directory = status
            .experiments
            .first()
            .map(|e| e.directory.clone())
            .unwrap_or_default();
        Ok(Response::new(proto::SubmitReply {
            name,
            outcome: proto::SubmitOutcome::from(outcome.outcome).into(),
            total_runs: outcome.total_runs,
            runs_to_do: outcome.runs_to_do,
            directory,
        }))
    }
}

pub struct ControlApi {
    pub handle: CoordinatorHandle,
    /// Snapshots watchers of one experiment share.
    pub snapshots: Arc<crate::watch::Snapshots>,
    /// Where experiments live, for reports.
    pub root: std::path::PathBuf,
}

/// Checks the token on every control call.
#[derive(Clone)]
pub struct TokenCheck {
    pub token: Arc<str>,
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get(TOKEN_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if tokens_match(&self.token, presented) {
            Ok(request)
        } else {
            Err(refused("this client"))
        }
    }
}

#[tonic::async_trait]
impl proto::control_service_server::ControlService for ControlApi {
    type WatchStream = BoxStream<proto::StatusReply>;

    async fn health(
        &self,
        _request: Request<proto::HealthRequest>,
    ) -> Result<Response<proto::HealthReply>, Status> {
        let workers = self.handle.worker_count().await.or_status()?;
        Ok(Response::new(proto::HealthReply {
            version: flotilla_shared::VERSION.to_string(),
            workers,
        }))
    }

    async fn submit(
        &self,
        request: Request<proto::SubmitRequest>,
    ) -> Result<Response<proto::SubmitReply>, Status> {
        let request = request.into_inner();
        let path = if request.config_path.is_empty() {
            "<submitted>"
        } else {
            &request.config_path
        };
        // Cases files come with the request: this machine's disk is not the submitter's.
        let case_files =
            |name: &str| {
                request.case_files.get(name).cloned().ok_or_else(|| {
                    format!("the cases file {name} did not come with the submission")
                })
            };
        let config = parse_experiment_with(&request.config_yaml, path, &case_files)
            .map_err(|e| status_of(Error::from(e)))?;
        let (workdir, bundle) = match request.workdir {
            Some(bundle) => {
                let files: Vec<BundleFile> = bundle.files.iter().cloned().map(Into::into).collect();
                let hash = bundle_hash(&files);
                if hash != bundle.hash {
                    return Err(Status::invalid_argument(
                        "workdir bundle hash does not match its content",
                    ));
                }
                let bytes = bundle.encode_to_vec();
                (
                    Some(WorkdirRef {
                        path: request.workdir_path.into(),
                        hash: hash.clone(),
                    }),
                    Some((hash, bytes)),
                )
            }
            None => (None, None),
        };
        let name = config.name.clone();
        let submission = Submission {
            config,
            config_yaml: request.config_yaml,
            workdir,
            retry_failed: request.retry_failed,
        };
        let outcome = self.handle.submit(submission, bundle).await.or_status()?;
        self.submit_reply(name, outcome).await
    }

    async fn drain_worker(
        &self,
        request: Request<proto::DrainRequest>,
    ) -> Result<Response<proto::DrainReply>, Status> {
        let running = self
            .handle
            .drain_worker(request.into_inner().worker)
            .await
            .or_status()?;
        Ok(Response::new(proto::DrainReply { running }))
    }

    async fn resume(
        &self,
        request: Request<proto::ResumeRequest>,
    ) -> Result<Response<proto::SubmitReply>, Status> {
        let request = request.into_inner();
        let outcome = self
            .handle
            .resume(request.name.clone(), request.retry_failed)
            .await
            .or_status()?;
        self.submit_reply(request.name, outcome).await
    }

    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusReply>, Status> {
        let name = request.into_inner().name;
        let name = (!name.is_empty()).then_some(name);
        Ok(Response::new(proto::StatusReply::from(
            self.handle.status(name).await.or_status()?,
        )))
    }

    async fn list(
        &self,
        _request: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListReply>, Status> {
        let status = self.handle.status(None).await.or_status()?;
        Ok(Response::new(proto::ListReply {
            experiments: status
                .experiments
                .into_iter()
                .map(proto::ExperimentStatus::from)
                .collect(),
        }))
    }

    async fn watch(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        if request.name.is_empty() {
            return Err(Status::invalid_argument("watch needs an experiment name"));
        }
        // Fails early for an unknown name.
        self.handle
            .status(Some(request.name.clone()))
            .await
            .or_status()?;
        // Subscribed now: whatever happens once the watcher has its answer reaches it.
        let events = request.events.then(|| self.handle.subscribe_events());
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(crate::watch::stream(
            self.handle.clone(),
            self.snapshots.clone(),
            request.name,
            events,
            sender,
        ));
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel(
        &self,
        request: Request<proto::CancelRequest>,
    ) -> Result<Response<proto::CancelReply>, Status> {
        let request = request.into_inner();
        let cancelled = self
            .handle
            .cancel(request.name, request.kill_running)
            .await
            .or_status()?;
        Ok(Response::new(proto::CancelReply { cancelled }))
    }

    async fn export(
        &self,
        request: Request<proto::ExportRequest>,
    ) -> Result<Response<proto::ExportReply>, Status> {
        let request = request.into_inner();
        let format = match proto::ExportFormat::try_from(request.format) {
            Ok(proto::ExportFormat::Csv) => crate::reports::ExportFormat::Csv,
            Ok(proto::ExportFormat::Jsonl) => crate::reports::ExportFormat::Jsonl,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "unknown export format {}; expected csv or jsonl",
                    request.format
                )))
            }
        };
        let table = match proto::ExportTable::try_from(request.table) {
            Ok(proto::ExportTable::Runs) => crate::reports::ExportTable::Runs,
            Ok(proto::ExportTable::Calls) => crate::reports::ExportTable::Calls,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown export table {}; expected runs or calls",
                    request.table
                )))
            }
        };
        let exported =
            crate::reports::export_blocking(self.root.clone(), request.name, table, format)
                .await
                .or_status()?;
        let columns_json = serde_json::to_string(&exported.columns)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(proto::ExportReply {
            content: exported.content,
            columns_json,
        }))
    }

    async fn report(
        &self,
        request: Request<proto::ReportRequest>,
    ) -> Result<Response<proto::ReportReply>, Status> {
        let request = request.into_inner();
        let options = flotilla_report::ReportOptions {
            min_effect: (request.min_effect > 0.0).then_some(request.min_effect),
        };
        let mut names = vec![request.name];
        names.extend(request.compare_with);
        let written = crate::reports::write_and_read(self.root.clone(), names, options)
            .await
            .or_status()?;
        Ok(Response::new(proto::ReportReply {
            markdown: written.markdown,
            json: written.json,
            directory: written.directory.to_string_lossy().into_owned(),
        }))
    }
}
