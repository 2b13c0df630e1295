//! Model names are `provider/model`; the provider decides where a call goes.

use crate::sim::SimModel;

/// Where a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Sim(SimModel),
}

impl Route {
    pub fn provider(&self) -> &'static str {
        match self {
            Route::Sim(_) => "sim",
        }
    }
}

/// A model the worker does not serve; the message lists what it serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}; this worker serves: {}", served().join(", "))]
pub struct UnknownModel {
    pub reason: String,
}

/// Every model this worker serves, as programs name them.
pub fn served() -> Vec<String> {
    SimModel::names()
        .map(|name| format!("sim/{name}"))
        .collect()
}

/// Finds the route of `requested` (`provider/model`).
pub fn route(requested: &str) -> Result<(Route, String), UnknownModel> {
    let Some((provider, model)) = requested.split_once('/') else {
        return Err(UnknownModel {
            reason: format!(
                "model '{requested}' names no provider (write provider/model, e.g. sim/echo) and no provider is marked default"
            ),
        });
    };
    // Ollama's clients may add the default tag.
    let model = model.strip_suffix(":latest").unwrap_or(model);
    match provider {
        "sim" => SimModel::named(model)
            .map(|sim| (Route::Sim(sim), model.to_string()))
            .ok_or_else(|| UnknownModel {
                reason: format!("unknown model '{requested}': sim has no model '{model}'"),
            }),
        other => Err(UnknownModel {
            reason: format!("unknown provider '{other}' in model '{requested}'"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_route_by_provider_and_unknown_ones_say_what_is_served() {
        assert_eq!(
            route("sim/tit-for-tat").unwrap(),
            (Route::Sim(SimModel::TitForTat), "tit-for-tat".to_string())
        );
        let error = route("openrouter/gpt-4o").unwrap_err().to_string();
        assert!(
            error.starts_with("unknown provider 'openrouter'"),
            "{error}"
        );
        assert!(
            error.contains("this worker serves: sim/always-cooperate"),
            "{error}"
        );
        assert!(route("sim/gpt-4o")
            .unwrap_err()
            .to_string()
            .contains("sim has no model 'gpt-4o'"));
        assert!(route("gpt-4o").is_err());
    }
}
