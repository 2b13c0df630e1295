//! What this worker serves, kept current: run kinds, the providers its
//! gateway reaches, and the models its Ollama has (read from `/api/tags`
//! now and every 30 s; a change is announced to the coordinator).

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_shared::protocol::Capabilities;
use serde_json::Value;
use tokio::sync::watch;
use tracing::info;

/// How often the Ollama's models are read again.
const OLLAMA_POLL: Duration = Duration::from_secs(30);

/// The capabilities with no Ollama seen yet.
pub fn initial(providers: &[flotilla_gateway::providers::Provider]) -> Capabilities {
    Capabilities {
        run_kinds: ["command", "chat", "noop"]
            .into_iter()
            .map(String::from)
            .collect(),
        providers: std::iter::once("sim".to_string())
            .chain(providers.iter().map(|p| p.name.clone()))
            .collect(),
        models: BTreeSet::new(),
        // Declared limits hold for the whole cluster (ARCHITECTURE.md, invariant 6).
        shared_limits: providers
            .iter()
            .filter(|p| p.limits.is_limited())
            .map(|p| (p.name.clone(), p.limits))
            .collect(),
    }
}

/// The models an Ollama serves, as `ollama/NAME` (a `:latest` tag dropped);
/// `None` when it cannot be reached.
pub async fn ollama_models(http: &reqwest::Client, ollama_url: &str) -> Option<BTreeSet<String>> {
    let response = http
        .get(format!("{}/api/tags", ollama_url.trim_end_matches('/')))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let body = response.error_for_status().ok()?.bytes().await.ok()?;
    let tags: Value = serde_json::from_slice(&body).ok()?;
    Some(
        tags.get("models")?
            .as_array()?
            .iter()
            .filter_map(|model| {
                model
                    .get("name")
                    .or_else(|| model.get("model"))
                    .and_then(Value::as_str)
            })
            .map(|name| format!("ollama/{}", name.strip_suffix(":latest").unwrap_or(name)))
            .collect(),
    )
}

/// Reads the Ollama's models now and every 30 s, updating `capabilities`.
pub async fn follow_ollama(
    http: reqwest::Client,
    ollama_url: String,
    capabilities: watch::Sender<Capabilities>,
) {
    loop {
        let models = ollama_models(&http, &ollama_url).await;
        capabilities.send_if_modified(|current| {
            let mut next = current.clone();
            match &models {
                Some(models) => {
                    next.providers.insert("ollama".into());
                    next.models = models.clone();
                }
                None => {
                    next.providers.remove("ollama");
                    next.models.clear();
                }
            }
            if next == *current {
                return false;
            }
            info!(
                ollama = ollama_url,
                models = next.models.len(),
                "the local Ollama's models changed"
            );
            *current = next;
            true
        });
        tokio::time::sleep(OLLAMA_POLL).await;
    }
}
