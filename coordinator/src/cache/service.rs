//! `CacheService`: thin handlers over [`ResponseCache`] for workers'
//! gateways (the token is checked by the interceptor it is served behind).

use std::sync::Arc;

use flotilla_shared::Error;
use flotilla_wire::cache::key_from_proto;
use flotilla_wire::proto;
use flotilla_wire::status::OrStatus;
use tonic::{Request, Response, Status};

use super::{AnswerRow, Hit, ResponseCache};

pub struct CacheApi {
    pub cache: Arc<ResponseCache>,
}

fn hit_to_proto(hit: Hit) -> proto::CachedAnswer {
    proto::CachedAnswer {
        answer: hit.answer,
        input_tokens: hit.input_tokens,
        output_tokens: hit.output_tokens,
        cached_input_tokens: hit.cached_input_tokens,
        cost_nanos: hit.cost_nanos,
        experiment: hit.experiment,
        run: hit.run,
        recorded_at_ms: hit.recorded_at_ms,
    }
}

fn row_from_proto(record: proto::CacheRecord) -> Result<AnswerRow, Error> {
    let key = key_from_proto(&record.key)?;
    if record.api() == proto::LlmApi::Unspecified {
        return Err(Error::Protocol("CacheRecord lacks its api".into()));
    }
    let answer = record
        .answer
        .ok_or_else(|| Error::Protocol("CacheRecord lacks its answer".into()))?;
    if answer.answer.is_empty() {
        return Err(Error::Protocol("CacheRecord's answer is empty".into()));
    }
    Ok(AnswerRow {
        key,
        endpoint: record.endpoint,
        provider: record.provider,
        model: record.model,
        seed: record.seed,
        occurrence: record.occurrence,
        request: record.request,
        answer: answer.answer,
        input_tokens: answer.input_tokens,
        output_tokens: answer.output_tokens,
        cached_input_tokens: answer.cached_input_tokens,
        cost_nanos: answer.cost_nanos,
        experiment: answer.experiment,
        run: answer.run,
        recorded_at_ms: answer.recorded_at_ms,
        replaces_before_ms: record.replaces_before_ms,
    })
}

#[tonic::async_trait]
impl proto::cache_service_server::CacheService for CacheApi {
    async fn lookup(
        &self,
        request: Request<proto::CacheLookup>,
    ) -> Result<Response<proto::CacheLookupReply>, Status> {
        let lookup = request.into_inner();
        let key = key_from_proto(&lookup.key).or_status()?;
        let hit = self
            .cache
            .lookup(key, lookup.oldest_ms, lookup.claim, &lookup.worker)
            .await
            .or_status()?;
        Ok(Response::new(proto::CacheLookupReply {
            hit: hit.map(hit_to_proto),
        }))
    }

    async fn record(
        &self,
        request: Request<proto::CacheRecord>,
    ) -> Result<Response<proto::CacheRecordReply>, Status> {
        let row = row_from_proto(request.into_inner()).or_status()?;
        self.cache.record(row).await.or_status()?;
        Ok(Response::new(proto::CacheRecordReply {}))
    }

    async fn abandon(
        &self,
        request: Request<proto::CacheAbandon>,
    ) -> Result<Response<proto::CacheRecordReply>, Status> {
        let key = key_from_proto(&request.into_inner().key).or_status()?;
        self.cache.abandon(&key);
        Ok(Response::new(proto::CacheRecordReply {}))
    }

    async fn count(
        &self,
        request: Request<proto::CacheCount>,
    ) -> Result<Response<proto::CacheCountReply>, Status> {
        let count = request.into_inner();
        let keys = count
            .keys
            .iter()
            .map(|key| key_from_proto(key))
            .collect::<Result<Vec<_>, _>>()
            .or_status()?;
        let (recorded, under_seeds, seeds_with_answers) = self
            .cache
            .count(keys, count.seeds, count.oldest_ms)
            .await
            .or_status()?;
        Ok(Response::new(proto::CacheCountReply {
            recorded,
            under_seeds,
            seeds_with_answers,
        }))
    }
}
