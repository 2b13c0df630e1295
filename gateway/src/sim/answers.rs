//! Answering a call with a sim model: the worst case held in the run's
//! budget first (prompt bytes as input tokens — a token is never shorter than
//! a byte — and the output cap as output), the answer made from the run's
//! seed and the conversation and cut to the cap, as a provider's would be,
//! then priced and recorded in the run's ledger.

use flotilla_shared::calls::CacheUse;
use flotilla_shared::tier::Tier;

use crate::call::{Answer, Call, Input, Refusal, Usage};
use crate::metering::calls::{CallRecord, CallStatus};
use crate::metering::runs::RunLedger;
use crate::pricing::Prices;
use crate::sim::{embedding, Sim, SIM_PRICES};

/// Answers `call` with `sim` (`model` is its name) for the run of `ledger`;
/// the answer and what it cost.
pub async fn answer(
    ledger: &RunLedger,
    call: &Call,
    sim: Sim,
    model: String,
    cache: CacheUse,
) -> Result<(Answer, f64), Refusal> {
    let prices = sim_prices(ledger, call);
    let (answer, hold) = match &call.input {
        Input::Conversation(conversation) => {
            let cap = call.output_cap().max(1);
            let bytes = conversation.iter().map(|(_, c)| c.len() as u64).sum();
            let hold = hold_worst_case(ledger, prices, bytes, cap).await?;
            let text = sim.truncate(sim.model.answer(ledger.seed, conversation), cap);
            let usage = Usage {
                input_tokens: conversation.iter().map(|(_, c)| sim.tokens(c)).sum(),
                output_tokens: sim.tokens(&text),
                cached_input_tokens: 0,
            };
            (Answer::Text { text, usage }, hold)
        }
        Input::Texts(texts) => {
            let bytes = texts.iter().map(|text| text.len() as u64).sum();
            let hold = hold_worst_case(ledger, prices, bytes, 0).await?;
            let usage = Usage {
                input_tokens: texts.iter().map(|text| sim.tokens(text)).sum(),
                output_tokens: 0,
                cached_input_tokens: 0,
            };
            let vectors = texts.iter().map(|text| embedding(text)).collect();
            (Answer::Vectors { vectors, usage }, hold)
        }
    };
    let cost_usd = prices.cost(answer.usage());
    hold.settle(cost_usd);
    record(ledger, call, model, answer.usage(), cost_usd, cache);
    Ok((answer, cost_usd))
}

/// The sim's prices, unless the experiment gives the model its own.
fn sim_prices(ledger: &RunLedger, call: &Call) -> Prices {
    ledger
        .prices
        .get(&call.model)
        .copied()
        .unwrap_or(SIM_PRICES)
}

/// Holds a sim call's worst case in the run's budget (ARCHITECTURE.md, invariant 1).
async fn hold_worst_case(
    ledger: &RunLedger,
    prices: Prices,
    input_bytes: u64,
    output_cap: u64,
) -> Result<crate::metering::spend::SpendHold, Refusal> {
    let worst_case = prices.cost(&Usage {
        input_tokens: input_bytes.max(1),
        output_tokens: output_cap,
        cached_input_tokens: 0,
    });
    ledger
        .spend
        .hold(worst_case)
        .await
        .map_err(Refusal::OverBudget)
}

/// Records a sim call in the run's ledger.
fn record(
    ledger: &RunLedger,
    call: &Call,
    model: String,
    usage: &Usage,
    cost_usd: f64,
    cache: CacheUse,
) {
    let latency_ms = call.started.elapsed().as_secs_f64() * 1000.0;
    ledger.record(CallRecord {
        started_at_ms: call.started_at_ms,
        provider: "sim".to_string(),
        model,
        api: call.api(),
        streamed: call.streamed,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cached_input_tokens: usage.cached_input_tokens,
        cost_usd,
        cost_is_worst_case: false,
        latency_ms,
        time_to_first_token_ms: latency_ms,
        retries: 0,
        status: CallStatus::Succeeded,
        cache,
        would_cost_usd: cost_usd,
        cached_from: None,
        tier: Tier::Standard,
        tier_saved_usd: 0.0,
        tier_refusals: 0,
        error: None,
    });
}
