//! The response cache as this worker's gateway reaches it: the coordinator's
//! `CacheService` (ARCHITECTURE.md, "Response cache"). Lookups wait for the
//! answer; records and abandoned claims are sent in the background, so a
//! call is never held up by recording its answer. A coordinator that cannot
//! be reached is a miss (the call goes upstream), except under `replay`.

use std::sync::Arc;

use flotilla_gateway::cache::{
    AnswerStore, Bytes, CacheFuture, CacheKey, Found, NewAnswer, Recorded,
};
use flotilla_gateway::call::Usage;
use flotilla_shared::auth::TOKEN_METADATA_KEY;
use flotilla_shared::calls::CachedFrom;
use flotilla_shared::money::Usd;
use flotilla_wire::proto;
use flotilla_wire::proto::cache_service_client::CacheServiceClient;
use tonic::transport::Channel;

use crate::connection::CoordinatorLink;

pub struct CoordinatorCache {
    client: CacheServiceClient<Channel>,
    token: Arc<str>,
    worker: String,
}

impl CoordinatorCache {
    pub fn new(link: &CoordinatorLink, worker: String) -> Self {
        CoordinatorCache {
            client: CacheServiceClient::new(link.lazy_channel())
                .max_decoding_message_size(flotilla_wire::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(flotilla_wire::MAX_MESSAGE_BYTES),
            token: link.token().into(),
            worker,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(token) = self.token.parse() {
            request.metadata_mut().insert(TOKEN_METADATA_KEY, token);
        }
        request
    }
}

impl AnswerStore for CoordinatorCache {
    fn lookup(
        &self,
        key: CacheKey,
        oldest_ms: Option<i64>,
        claim: bool,
    ) -> CacheFuture<'_, Result<Found, String>> {
        let request = self.request(proto::CacheLookup {
            key: key.0.to_vec(),
            oldest_ms: oldest_ms.unwrap_or(0),
            claim,
            worker: self.worker.clone(),
        });
        let mut client = self.client.clone();
        Box::pin(async move {
            let reply = client
                .lookup(request)
                .await
                .map_err(|status| status.message().to_string())?;
            Ok(match reply.into_inner().hit {
                Some(hit) => Found::Hit(Arc::new(recorded_from_proto(hit))),
                None => Found::Miss,
            })
        })
    }

    fn record(&self, answer: NewAnswer) {
        let request = self.request(record_to_proto(answer));
        let mut client = self.client.clone();
        tokio::spawn(async move {
            if let Err(status) = client.record(request).await {
                tracing::warn!(
                    error = status.message(),
                    "an answer could not be recorded in the cache"
                );
            }
        });
    }

    fn abandon(&self, key: CacheKey) {
        let request = self.request(proto::CacheAbandon {
            key: key.0.to_vec(),
        });
        let mut client = self.client.clone();
        tokio::spawn(async move {
            let _ = client.abandon(request).await;
        });
    }
}

pub fn recorded_from_proto(answer: proto::CachedAnswer) -> Recorded {
    Recorded {
        answer: Bytes::from(answer.answer),
        usage: Usage {
            input_tokens: answer.input_tokens,
            output_tokens: answer.output_tokens,
            cached_input_tokens: answer.cached_input_tokens,
        },
        cost_usd: Usd::from_nanos(answer.cost_nanos).dollars(),
        from: CachedFrom {
            experiment: answer.experiment,
            run: answer.run,
            recorded_at_ms: answer.recorded_at_ms,
        },
    }
}

fn record_to_proto(answer: NewAnswer) -> proto::CacheRecord {
    let recorded = answer.recorded;
    proto::CacheRecord {
        key: answer.key.0.to_vec(),
        endpoint: answer.operation.path().to_string(),
        api: match answer.operation.api() {
            flotilla_shared::calls::Api::Openai => proto::LlmApi::Openai,
            flotilla_shared::calls::Api::Anthropic => proto::LlmApi::Anthropic,
            flotilla_shared::calls::Api::Ollama => proto::LlmApi::Ollama,
        }
        .into(),
        provider: answer.provider,
        model: answer.model,
        seed: answer.seed,
        occurrence: answer.occurrence,
        request: answer.request.to_vec(),
        replaces_before_ms: answer.replaces_before_ms.unwrap_or(0),
        answer: Some(proto::CachedAnswer {
            answer: recorded.answer.to_vec(),
            input_tokens: recorded.usage.input_tokens,
            output_tokens: recorded.usage.output_tokens,
            cached_input_tokens: recorded.usage.cached_input_tokens,
            cost_nanos: Usd::charge(recorded.cost_usd).nanos(),
            experiment: recorded.from.experiment,
            run: recorded.from.run,
            recorded_at_ms: recorded.from.recorded_at_ms,
        }),
    }
}
