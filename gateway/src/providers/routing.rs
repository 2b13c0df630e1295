//! Model names are `provider/model`; the provider decides where a call goes.
//! Bare names go to the provider marked `default`.

use std::sync::Arc;

use crate::providers::Provider;
use crate::sim::{Sim, SimModel};

/// Where a call goes.
#[derive(Debug, Clone)]
pub enum Route {
    Sim(Sim),
    /// A provider of the providers file, and the model by its own name.
    Upstream(Arc<Provider>),
}

impl Route {
    pub fn provider(&self) -> &str {
        match self {
            Route::Sim(_) => "sim",
            Route::Upstream(provider) => &provider.name,
        }
    }
}

/// A model the worker does not serve; the message lists what it serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}; this worker serves: {}", served.join(", "))]
pub struct UnknownModel {
    pub reason: String,
    pub served: Vec<String>,
}

/// The providers this worker reaches.
#[derive(Debug, Default)]
pub struct Routing {
    providers: Vec<Arc<Provider>>,
    /// A sim-server's models served under names of their own.
    own_names: Vec<(String, Sim)>,
}

impl Routing {
    pub fn new(providers: Vec<Provider>) -> Self {
        Routing {
            providers: providers.into_iter().map(Arc::new).collect(),
            own_names: Vec::new(),
        }
    }

    /// A sim-server's routing: `sim/…` and the models of its `--config`.
    pub fn sim_server(own_names: Vec<(String, Sim)>) -> Self {
        Routing {
            providers: Vec::new(),
            own_names,
        }
    }

    /// Every model this worker serves, as programs name them; `NAME/*` for a
    /// provider that serves whatever its upstream has.
    pub fn served(&self) -> Vec<String> {
        let mut served: Vec<String> = self
            .own_names
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        served.extend(SimModel::names().map(|name| format!("sim/{name}")));
        for provider in &self.providers {
            served.push(format!(
                "{}/* ({} API{})",
                provider.name,
                provider.api.as_str(),
                if provider.default { ", default" } else { "" }
            ));
        }
        served
    }

    /// Finds where `requested` (`provider/model`, or a bare name for the default provider) goes.
    pub fn route(&self, requested: &str) -> Result<(Route, String), UnknownModel> {
        let unknown = |reason: String| UnknownModel {
            reason,
            served: self.served(),
        };
        let bare = requested.strip_suffix(":latest").unwrap_or(requested);
        if let Some((name, model)) = self.own_names.iter().find(|(name, _)| name == bare) {
            return Ok((Route::Sim(*model), name.clone()));
        }
        let default = self.providers.iter().find(|p| p.default);
        let (provider, model) = match requested.split_once('/') {
            Some((provider, model)) if provider == "sim" || self.providers.iter().any(|p| p.name == provider) => {
                (provider, model)
            }
            // OpenRouter-style names (`openai/gpt-4o`) go whole to the default provider.
            _ => match default {
                Some(default) => return Ok((Route::Upstream(default.clone()), requested.to_string())),
                None => {
                    return Err(unknown(match requested.split_once('/') {
                        Some((provider, _)) => format!("unknown provider '{provider}' in model '{requested}'"),
                        None => format!(
                            "model '{requested}' names no provider (write provider/model, e.g. sim/echo) and no provider is marked default"
                        ),
                    }))
                }
            },
        };
        if provider == "sim" {
            // Ollama's clients may add the default tag.
            let name = model.strip_suffix(":latest").unwrap_or(model);
            return SimModel::named(name)
                .map(|sim| (Route::Sim(Sim::of(sim)), name.to_string()))
                .ok_or_else(|| {
                    unknown(format!(
                        "unknown model '{requested}': sim has no model '{name}'"
                    ))
                });
        }
        let provider = self
            .providers
            .iter()
            .find(|p| p.name == provider)
            .expect("matched above");
        Ok((Route::Upstream(provider.clone()), model.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::parse_providers;

    #[test]
    fn names_route_by_provider_and_unknown_ones_say_what_is_served() {
        let routing = Routing::default();
        assert!(matches!(
            routing.route("sim/tit-for-tat").unwrap(),
            (Route::Sim(sim), name) if sim.model == SimModel::TitForTat && name == "tit-for-tat"
        ));
        let error = routing.route("openrouter/gpt-4o").unwrap_err().to_string();
        assert!(
            error.starts_with("unknown provider 'openrouter'"),
            "{error}"
        );
        assert!(
            error.contains("this worker serves: sim/always-cooperate"),
            "{error}"
        );
        assert!(routing
            .route("sim/gpt-4o")
            .unwrap_err()
            .to_string()
            .contains("sim has no model 'gpt-4o'"));
        assert!(routing.route("gpt-4o").is_err());
    }

    #[test]
    fn providers_of_the_file_and_the_default_take_their_names() {
        let file = "providers:\n  - {name: local, api: openai, base_url: 'http://127.0.0.1:9/v1'}\n  - {name: router, api: openai, base_url: 'http://127.0.0.1:8/v1', default: true}\n";
        let routing = Routing::new(parse_providers(file, "p.yaml", |_| None).unwrap());
        let (route, model) = routing.route("local/small").unwrap();
        assert_eq!((route.provider(), model.as_str()), ("local", "small"));
        let (route, model) = routing.route("openai/gpt-4o-mini").unwrap();
        assert_eq!(
            (route.provider(), model.as_str()),
            ("router", "openai/gpt-4o-mini")
        );
        let (route, model) = routing.route("gpt-4o").unwrap();
        assert_eq!((route.provider(), model.as_str()), ("router", "gpt-4o"));
        assert!(routing
            .served()
            .contains(&"local/* (openai API)".to_string()));
    }
}
