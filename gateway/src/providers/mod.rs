//! Providers a worker can reach beyond the built-in `sim`: the providers file
//! (`--providers FILE` on `worker join` and `run`). API keys are read from
//! the worker's environment by the name the file gives, and go nowhere else.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

pub mod limits;
mod recent;
pub mod relay;
mod respond;
mod retry;
pub mod routing;

use crate::pricing::Prices;
use limits::Limits;

/// The API a provider speaks.
pub use flotilla_shared::calls::Api;

/// One provider, validated.
#[derive(Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    pub api: Api,
    /// As the provider's official client takes it (OpenAI: …/v1), without a trailing `/`.
    pub base_url: String,
    /// Read from the environment named by `api_key_env`; never logged.
    pub api_key: Option<String>,
    pub limits: Limits,
    /// By the provider's own model name.
    pub prices: BTreeMap<String, Prices>,
    /// The price of models `prices` does not list (the built-in Ollama's: free).
    pub unlisted_price: Option<Prices>,
    /// Models served at the flex tier (`service_tier: "flex"`), by the
    /// provider's own name, at these prices (`tiers: {flex: …}`).
    pub flex_prices: BTreeMap<String, Prices>,
    pub default: bool,
    /// Its limits hold for the whole cluster and are shared among workers
    /// (ARCHITECTURE.md, invariant 6); the worker's own Ollama's are its own.
    pub shares_limits: bool,
}

/// Where the worker's own Ollama listens unless told otherwise.
pub const DEFAULT_OLLAMA_URL: &str = "http://127.0.0.1:11434";

impl Provider {
    /// The built-in `ollama` provider: the worker's Ollama, free, one call at a
    /// time unless its `OLLAMA_NUM_PARALLEL` is given, so queued calls wait
    /// here instead of meeting Ollama's 503.
    pub fn ollama(base_url: &str, parallel: u64) -> Provider {
        Provider {
            name: "ollama".into(),
            api: Api::Ollama,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: None,
            limits: Limits {
                concurrency: Some(parallel.max(1)),
                ..Limits::default()
            },
            prices: BTreeMap::new(),
            unlisted_price: Some(Prices::new(0.0, 0.0, 0.0)),
            flex_prices: BTreeMap::new(),
            default: false,
            shares_limits: false,
        }
    }

    /// The provider's key on a request, as its API expects it.
    pub fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = match self.api {
            Api::Anthropic => request.header("anthropic-version", "2023-06-01"),
            Api::Openai | Api::Ollama => request,
        };
        match (&self.api_key, self.api) {
            (Some(key), Api::Anthropic) => request.header("x-api-key", key),
            (Some(key), Api::Openai | Api::Ollama) => request.bearer_auth(key),
            (None, _) => request,
        }
    }

    /// What `model` costs here at the standard tier, if anyone knows.
    pub fn price_of(&self, model: &str) -> Option<Prices> {
        self.prices
            .get(model)
            .copied()
            .or(self.unlisted_price)
            .or_else(|| crate::pricing::hosted_price(model))
    }

    /// What `model` costs at the flex tier, when the providers file says it offers it.
    pub fn flex_price_of(&self, model: &str) -> Option<Prices> {
        self.flex_prices.get(model).copied()
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of every log and error.
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("api", &self.api)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("limits", &self.limits)
            .field("default", &self.default)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    providers: Vec<Spanned<RawProvider>>,
}

/// Who a provider's declared limits are for.
#[derive(Deserialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum LimitScope {
    /// One key for the whole cluster: the workers share the limits.
    #[default]
    Cluster,
    /// Each worker calls with its own key: the limits are each worker's.
    Worker,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    api: Api,
    base_url: String,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    prices: BTreeMap<String, RawPrices>,
    /// Tiers beyond the standard one: `flex`, with its prices per model.
    #[serde(default)]
    tiers: BTreeMap<String, BTreeMap<String, RawPrices>>,
    #[serde(default)]
    default: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    rpm: Option<u64>,
    tpm: Option<u64>,
    /// `worker`: each worker has its own key, so each gets the whole limit;
    /// `cluster` (the default): the workers share it.
    #[serde(default)]
    scope: LimitScope,
    concurrency: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrices {
    input: f64,
    output: f64,
    #[serde(default)]
    cached_input: Option<f64>,
}

/// Names a provider cannot take: the built-in ones.
const BUILT_IN: [&str; 2] = ["sim", "ollama"];

/// Reads the providers file at `path` with keys from this process's environment.
pub fn read_providers(path: &std::path::Path) -> Result<Vec<Provider>, String> {
    let yaml = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the providers file {}: {e}", path.display()))?;
    parse_providers(&yaml, &path.display().to_string(), |name| {
        std::env::var(name).ok()
    })
}

/// Reads a providers file; `environment` looks up API keys. Errors name the
/// file, the line and the provider, and say what would be valid.
pub fn parse_providers(
    yaml: &str,
    file: &str,
    environment: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Provider>, String> {
    let raw: RawFile = serde_saphyr::from_str(yaml).map_err(|e| format!("{file}: {e}"))?;
    let mut providers: Vec<Provider> = Vec::new();
    for (index, entry) in raw.providers.into_iter().enumerate() {
        let line = entry.referenced.line();
        let raw = entry.value;
        let name = raw.name.clone();
        let at = |message: String| format!("{file}:{line}: providers[{index}] ({name}): {message}");
        check_name(&raw.name, &providers).map_err(at)?;
        providers.push(validated(raw, &environment).map_err(at)?);
    }
    let defaults: Vec<&str> = providers
        .iter()
        .filter(|p| p.default)
        .map(|p| p.name.as_str())
        .collect();
    if defaults.len() > 1 {
        return Err(format!(
            "{file}: only one provider may be the default; {} all say default: true",
            defaults.join(", ")
        ));
    }
    Ok(providers)
}

/// A provider's name: a model prefix, not built in, not taken.
fn check_name(name: &str, taken: &[Provider]) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !well_formed {
        return Err(
            "name must be letters, digits, '-' and '_' (models are called NAME/model)".into(),
        );
    }
    if BUILT_IN.contains(&name) {
        return Err(format!(
            "'{name}' is built in; give this provider another name"
        ));
    }
    if taken.iter().any(|p| p.name == name) {
        return Err(format!("'{name}' is named twice"));
    }
    Ok(())
}

/// One provider of the file, checked: its URL, key, prices and limits.
fn validated(
    raw: RawProvider,
    environment: &impl Fn(&str) -> Option<String>,
) -> Result<Provider, String> {
    if !(raw.base_url.starts_with("http://") || raw.base_url.starts_with("https://")) {
        return Err(format!(
            "base_url '{}' must start with http:// or https:// (OpenAI: …/v1; Anthropic, Ollama: the host)",
            raw.base_url
        ));
    }
    let api_key = match &raw.api_key_env {
        None => None,
        Some(variable) => Some(environment(variable).filter(|v| !v.is_empty()).ok_or_else(
            || {
                format!(
                    "api_key_env names {variable}, which is not set in this worker's environment"
                )
            },
        )?),
    };
    let prices = validated_prices(raw.prices, "prices")?;
    let flex_prices = validated_tiers(raw.tiers, raw.api)?;
    for (what, value) in [
        ("rpm", raw.limits.rpm),
        ("tpm", raw.limits.tpm),
        ("concurrency", raw.limits.concurrency),
    ] {
        if value == Some(0) {
            return Err(format!(
                "limits.{what} must be at least 1 (leave it out for no limit)"
            ));
        }
    }
    Ok(Provider {
        api: raw.api,
        base_url: raw.base_url.trim_end_matches('/').to_string(),
        api_key,
        limits: Limits {
            requests_per_minute: raw.limits.rpm,
            tokens_per_minute: raw.limits.tpm,
            concurrency: raw.limits.concurrency,
        },
        prices,
        unlisted_price: None,
        flex_prices,
        default: raw.default,
        shares_limits: raw.limits.scope == LimitScope::Cluster,
        name: raw.name,
    })
}

/// Dollars per million tokens by model, each checked; `what` names them in errors.
fn validated_prices(
    raw: BTreeMap<String, RawPrices>,
    what: &str,
) -> Result<BTreeMap<String, Prices>, String> {
    let mut prices = BTreeMap::new();
    for (model, price) in raw {
        let values = [
            price.input,
            price.output,
            price.cached_input.unwrap_or(price.input),
        ];
        if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(format!(
                "{what} of '{model}' must be non-negative dollars per million tokens"
            ));
        }
        prices.insert(model, Prices::new(values[0], values[1], values[2]));
    }
    Ok(prices)
}

/// `tiers:`: the flex tier's prices per model. Flex is asked for with the
/// OpenAI API's `service_tier` field (OpenAI, Azure, Gemini and Groq take it),
/// so only providers speaking that API can offer it. Prices are stated, never
/// assumed half: Groq's flex costs what its standard tier does.
fn validated_tiers(
    raw: BTreeMap<String, BTreeMap<String, RawPrices>>,
    api: Api,
) -> Result<BTreeMap<String, Prices>, String> {
    let mut flex = BTreeMap::new();
    for (tier, prices) in raw {
        if tier != "flex" {
            return Err(format!(
                "tiers.{tier} is not a tier Flotilla can ask for; valid: flex (the standard tier's prices are under prices)"
            ));
        }
        if api != Api::Openai {
            return Err(format!(
                "tiers.flex needs api: openai: the flex tier is asked for with the OpenAI API's service_tier field, which the {} API does not have",
                api.as_str()
            ));
        }
        flex = validated_prices(prices, "tiers.flex prices")?;
    }
    Ok(flex)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "providers:\n  - name: local\n    api: openai\n    base_url: http://127.0.0.1:9/v1/\n    api_key_env: LOCAL_KEY\n    limits: {rpm: 600, concurrency: 4}\n    prices:\n      small: {input: 0.1, output: 0.2}\n    default: true\n";

    #[test]
    fn a_providers_file_is_read_with_keys_from_the_environment() {
        let providers = parse_providers(FILE, "p.yaml", |name| {
            (name == "LOCAL_KEY").then(|| "secret".to_string())
        })
        .unwrap();
        let local = &providers[0];
        assert_eq!(local.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(local.api_key.as_deref(), Some("secret"));
        assert_eq!(local.limits.requests_per_minute, Some(600));
        assert_eq!(local.prices["small"], Prices::new(0.1, 0.2, 0.1));
        assert!(local.default);
        assert!(
            local.shares_limits,
            "limits are the cluster's unless said otherwise"
        );
        let own = parse_providers(
            &FILE.replace("concurrency: 4}", "concurrency: 4, scope: worker}"),
            "p.yaml",
            |_| Some("k".into()),
        )
        .unwrap();
        assert!(!own[0].shares_limits);
        assert!(
            !format!("{local:?}").contains("secret"),
            "keys stay out of logs"
        );
    }

    #[test]
    fn mistakes_are_named_with_their_place_and_what_would_be_valid() {
        let missing = parse_providers(FILE, "p.yaml", |_| None).unwrap_err();
        assert_eq!(
            missing,
            "p.yaml:2: providers[0] (local): api_key_env names LOCAL_KEY, which is not set in this worker's environment"
        );
        let built_in = parse_providers(&FILE.replace("name: local", "name: sim"), "p.yaml", |_| {
            Some("k".into())
        });
        assert!(built_in.unwrap_err().contains("'sim' is built in"));
        let unknown_api = parse_providers(
            &FILE.replace("api: openai", "api: cohere"),
            "p.yaml",
            |_| Some("k".into()),
        );
        assert!(
            unknown_api.unwrap_err().contains("openai"),
            "lists the valid APIs"
        );
        let unknown_field = parse_providers(
            &FILE.replace("default: true", "defualt: true"),
            "p.yaml",
            |_| Some("k".into()),
        );
        assert!(unknown_field.unwrap_err().contains("defualt"));
    }

    #[test]
    fn flex_prices_are_read_for_openai_providers_only() {
        let flex = FILE.replace(
            "    default: true\n",
            "    tiers:\n      flex:\n        small: {input: 0.05, output: 0.1}\n    default: true\n",
        );
        let providers = parse_providers(&flex, "p.yaml", |_| Some("k".into())).unwrap();
        assert_eq!(
            providers[0].flex_price_of("small"),
            Some(Prices::new(0.05, 0.1, 0.05))
        );
        assert_eq!(providers[0].flex_price_of("large"), None);
        let anthropic = parse_providers(
            &flex.replace("api: openai", "api: anthropic"),
            "p.yaml",
            |_| Some("k".into()),
        );
        assert!(
            anthropic
                .unwrap_err()
                .contains("tiers.flex needs api: openai"),
            "Anthropic's API has no flex tier"
        );
        let priority = parse_providers(
            &flex.replace("      flex:", "      priority:"),
            "p.yaml",
            |_| Some("k".into()),
        );
        assert!(priority.unwrap_err().contains("valid: flex"));
        let negative = parse_providers(&flex.replace("input: 0.05", "input: -1"), "p.yaml", |_| {
            Some("k".into())
        });
        assert!(negative
            .unwrap_err()
            .contains("tiers.flex prices of 'small' must be non-negative"));
    }
}
