//! The divergence registry: built-ins and plugins register through the same `inventory` path.
//!
//! Every crate that provides a divergence submits a [`DivergenceEntry`] with
//! [`register_divergence!`](crate::register_divergence). The registry collects them once,
//! sorts them by name and rejects duplicates; an unknown name is answered with the list of
//! known names.
//!
//! Configs name a divergence as `{"type": "jensen-shannon"}`, `{"type": "alpha", "alpha": 0.5}`
//! or the CLI spelling `"alpha:0.5"`; `Box<dyn Divergence>` (de)serialises through the registry
//! (docs/registry.md says why the registry and not `typetag`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Divergence;
use crate::error::RegistryError;

/// Parameters of a parametric divergence (`{"alpha": 0.5}`).
pub type Params = Map<String, Value>;

/// One registration. Submit it with [`register_divergence!`](crate::register_divergence).
pub struct DivergenceEntry {
    /// The crate that registered the entry (`env!("CARGO_PKG_NAME")`), for duplicate reports.
    pub crate_name: &'static str,
    /// A representative instance (for a family, one member): its name is the registry name,
    /// and listings read summary, `h` formula and mode from it.
    pub example: fn() -> Box<dyn Divergence>,
    /// Builds an instance from parameters; a fixed divergence rejects any parameter.
    pub from_params: fn(&Params) -> Result<Box<dyn Divergence>, String>,
}

inventory::collect!(DivergenceEntry);

/// Registers a divergence type with the registry.
///
/// - `register_divergence!(MyDivergence)` for a fixed divergence (a `Default` type);
/// - `register_divergence!(MyFamily, example = MyFamily::default(), from_params = MyFamily::from_params)`
///   for a parametric family, where `from_params(&Params) -> Result<MyFamily, String>`.
///
/// A binary must link the crate that holds the registration (`use my_plugin as _;`),
/// or the linker may drop it: see docs/plugins.md.
#[macro_export]
macro_rules! register_divergence {
    ($ty:ty) => {
        $crate::inventory::submit! {
            $crate::registry::DivergenceEntry {
                crate_name: env!("CARGO_PKG_NAME"),
                example: || ::std::boxed::Box::new(<$ty as ::core::default::Default>::default()),
                from_params: |params| {
                    $crate::registry::reject_params(params)?;
                    Ok(::std::boxed::Box::new(<$ty as ::core::default::Default>::default()))
                },
            }
        }
    };
    ($ty:ty, example = $example:expr, from_params = $from:path) => {
        $crate::inventory::submit! {
            $crate::registry::DivergenceEntry {
                crate_name: env!("CARGO_PKG_NAME"),
                example: || ::std::boxed::Box::new($example),
                from_params: |params| {
                    let d: $ty = $from(params)?;
                    Ok(::std::boxed::Box::new(d))
                },
            }
        }
    };
}

/// Helper for fixed divergences: an error if any parameter is given.
pub fn reject_params(params: &Params) -> Result<(), String> {
    if params.is_empty() {
        Ok(())
    } else {
        let keys: Vec<&str> = params.keys().map(String::as_str).collect();
        Err(format!("takes no parameters, but got {}", keys.join(", ")))
    }
}

/// A registered name with the facts a listing shows.
#[derive(Debug, Clone, Serialize)]
pub struct DivergenceInfo {
    /// Registry name.
    pub name: &'static str,
    /// One-line summary (of the representative instance, for a family).
    pub summary: String,
    /// `h(r)` formula.
    pub h: String,
    /// Mode behaviour label.
    pub mode: String,
    /// Parameter names (empty for a fixed divergence).
    pub params: Vec<String>,
    /// The crate that registered it.
    #[serde(rename = "crate")]
    pub crate_name: &'static str,
}

/// The collected, sorted and checked set of registrations.
pub struct Registry {
    entries: BTreeMap<&'static str, &'static DivergenceEntry>,
    duplicates: Vec<(String, Vec<&'static str>)>,
}

impl Registry {
    /// Builds a registry from entries: sorted by name, duplicates recorded.
    pub fn from_entries<I: IntoIterator<Item = &'static DivergenceEntry>>(entries: I) -> Self {
        let mut by_name: BTreeMap<&'static str, Vec<&'static DivergenceEntry>> = BTreeMap::new();
        for entry in entries {
            by_name
                .entry((entry.example)().name())
                .or_default()
                .push(entry);
        }
        let mut duplicates = Vec::new();
        let mut sorted = BTreeMap::new();
        for (name, list) in by_name {
            if list.len() > 1 {
                let mut crates: Vec<&'static str> = list.iter().map(|e| e.crate_name).collect();
                crates.sort_unstable();
                duplicates.push((name.to_string(), crates));
            }
            sorted.insert(name, list[0]);
        }
        Registry {
            entries: sorted,
            duplicates,
        }
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.keys().copied().collect()
    }

    /// Fails if two crates registered the same name.
    pub fn check(&self) -> Result<(), RegistryError> {
        match self.duplicates.first() {
            None => Ok(()),
            Some((name, crates)) => Err(RegistryError::Duplicate {
                name: name.clone(),
                crates: crates.join(", "),
            }),
        }
    }

    /// Listing rows, sorted by name.
    pub fn list(&self) -> Result<Vec<DivergenceInfo>, RegistryError> {
        self.check()?;
        Ok(self
            .entries
            .iter()
            .map(|(name, entry)| {
                let d = (entry.example)();
                DivergenceInfo {
                    name,
                    summary: d.summary(),
                    h: d.h_formula(),
                    mode: d.mode().label().to_string(),
                    params: d.params().keys().cloned().collect(),
                    crate_name: entry.crate_name,
                }
            })
            .collect())
    }

    /// Builds the divergence `name` with `params`.
    pub fn build(&self, name: &str, params: &Params) -> Result<Box<dyn Divergence>, RegistryError> {
        self.check()?;
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| RegistryError::Unknown {
                name: name.to_string(),
                known: self.names().join(", "),
            })?;
        (entry.from_params)(params).map_err(|reason| RegistryError::InvalidParams {
            name: name.to_string(),
            reason,
        })
    }

    /// Parses the CLI spelling `name` or `name:v1,v2` (or `name:key=v,...`) and builds it.
    pub fn parse(&self, spec: &str) -> Result<Box<dyn Divergence>, RegistryError> {
        let (name, rest) = match spec.split_once(':') {
            Some((n, r)) => (n.trim(), Some(r)),
            None => (spec.trim(), None),
        };
        let mut params = Params::new();
        if let Some(rest) = rest {
            self.check()?;
            let entry = self
                .entries
                .get(name)
                .ok_or_else(|| RegistryError::Unknown {
                    name: name.to_string(),
                    known: self.names().join(", "),
                })?;
            let positional: Vec<String> = (entry.example)().params().keys().cloned().collect();
            for (i, item) in rest.split(',').enumerate() {
                let (key, value) = match item.split_once('=') {
                    Some((k, v)) => (k.trim().to_string(), v.trim()),
                    None => match positional.get(i) {
                        Some(k) => (k.clone(), item.trim()),
                        None => {
                            return Err(RegistryError::InvalidParams {
                                name: name.to_string(),
                                reason: format!(
                                    "too many values in `{spec}`: it takes {} ({})",
                                    positional.len(),
                                    positional.join(", ")
                                ),
                            });
                        }
                    },
                };
                let value: Value = serde_json::from_str(value)
                    .unwrap_or_else(|_| Value::String(value.to_string()));
                params.insert(key, value);
            }
        }
        self.build(name, &params)
    }
}

/// The process-wide registry of every linked registration.
pub fn global() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::from_entries(inventory::iter::<DivergenceEntry>))
}

/// Builds a divergence from its CLI spelling (`"jensen-shannon"`, `"alpha:0.5"`).
pub fn resolve(spec: &str) -> Result<Box<dyn Divergence>, RegistryError> {
    global().parse(spec)
}

/// Sorted listing of every registered divergence.
pub fn list() -> Result<Vec<DivergenceInfo>, RegistryError> {
    global().list()
}

/// The serialised form of a divergence in configs: `{"type": name, ...params}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DivergenceSpec {
    /// Registry name.
    #[serde(rename = "type")]
    pub name: String,
    /// Family parameters.
    #[serde(flatten)]
    pub params: Params,
}

impl DivergenceSpec {
    /// The spec of an instance.
    pub fn of(d: &dyn Divergence) -> Self {
        DivergenceSpec {
            name: d.name().to_string(),
            params: d.params(),
        }
    }

    /// Builds the instance through the global registry.
    pub fn build(&self) -> Result<Box<dyn Divergence>, RegistryError> {
        global().build(&self.name, &self.params)
    }
}

impl fmt::Display for DivergenceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.params.is_empty() {
            let values: Vec<String> = self.params.values().map(|v| v.to_string()).collect();
            write!(f, ":{}", values.join(","))?;
        }
        Ok(())
    }
}

impl Serialize for Box<dyn Divergence> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DivergenceSpec::of(self.as_ref()).serialize(serializer)
    }
}

/// Accepts either the table form or the CLI string form.
#[derive(Deserialize)]
#[serde(untagged)]
enum SpecRepr {
    Text(String),
    Table(DivergenceSpec),
}

impl<'de> Deserialize<'de> for Box<dyn Divergence> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match SpecRepr::deserialize(deserializer)? {
            SpecRepr::Text(s) => resolve(&s).map_err(de::Error::custom),
            SpecRepr::Table(spec) => spec.build().map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModeBehaviour, softplus};

    #[derive(Debug, Clone, Default)]
    struct Dummy;
    impl Divergence for Dummy {
        fn name(&self) -> &'static str {
            "test-dummy"
        }
        fn summary(&self) -> String {
            "test-only Jeffreys copy".into()
        }
        fn h_formula(&self) -> String {
            "r+1".into()
        }
        fn mode(&self) -> ModeBehaviour {
            ModeBehaviour::Covering
        }
        fn f(&self, r: f64) -> f64 {
            (r - 1.0) * r.ln()
        }
        fn f_prime(&self, r: f64) -> f64 {
            r.ln() + 1.0 - 1.0 / r
        }
        fn f_second(&self, r: f64) -> f64 {
            1.0 / r + 1.0 / (r * r)
        }
        fn h(&self, r: f64) -> f64 {
            r + 1.0
        }
        fn log_h(&self, l: f64) -> f64 {
            softplus(l)
        }
    }
    register_divergence!(Dummy);

    static DUP_A: DivergenceEntry = DivergenceEntry {
        crate_name: "crate-a",
        example: || Box::new(Dummy),
        from_params: |_| Ok(Box::new(Dummy)),
    };
    static DUP_B: DivergenceEntry = DivergenceEntry {
        crate_name: "crate-b",
        example: || Box::new(Dummy),
        from_params: |_| Ok(Box::new(Dummy)),
    };

    #[test]
    fn duplicates_are_reported_with_both_crates() {
        let reg = Registry::from_entries([&DUP_A, &DUP_B]);
        let err = reg.list().unwrap_err().to_string();
        assert!(err.contains("test-dummy"), "{err}");
        assert!(err.contains("crate-a") && err.contains("crate-b"), "{err}");
        assert!(reg.parse("test-dummy").is_err());
    }

    #[test]
    fn unknown_name_lists_known_names() {
        let err = resolve("no-such-divergence").unwrap_err().to_string();
        assert!(err.contains("no-such-divergence"), "{err}");
        assert!(err.contains("test-dummy"), "{err}");
    }

    #[test]
    fn fixed_divergence_rejects_params() {
        let err = resolve("test-dummy:3").unwrap_err().to_string();
        assert!(err.contains("too many values"), "{err}");
        let err = resolve("test-dummy:x=3").unwrap_err().to_string();
        assert!(err.contains("takes no parameters"), "{err}");
    }

    #[test]
    fn box_dyn_roundtrips_through_json_and_toml() {
        #[derive(Serialize, Deserialize)]
        struct Cfg {
            divergence: Box<dyn Divergence>,
        }
        let cfg = Cfg {
            divergence: resolve("test-dummy").unwrap(),
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(json, r#"{"divergence":{"type":"test-dummy"}}"#);
        let back: Cfg = serde_json::from_str(&json).unwrap();
        assert_eq!(back.divergence.name(), "test-dummy");
        let toml_text = toml::to_string(&cfg).unwrap();
        let back: Cfg = toml::from_str(&toml_text).unwrap();
        assert_eq!(back.divergence.name(), "test-dummy");
        let from_text: Cfg = serde_json::from_str(r#"{"divergence":"test-dummy"}"#).unwrap();
        assert_eq!(from_text.divergence.name(), "test-dummy");
        let err = serde_json::from_str::<Cfg>(r#"{"divergence":"nope"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("test-dummy"), "{err}");
    }
}
