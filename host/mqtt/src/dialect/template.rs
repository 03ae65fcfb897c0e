//! IoT Edge's configurable topic templates (`MessageAddressConverter` over the protocol
//! gateway's `UriPathTemplate`), for the conformance vectors that pin their mechanics and for
//! deployments that want other topic names. Verge's own hot path uses the fixed topics of
//! [`super::topic`] and [`super::outbound`], which accept what IoT Edge's production templates
//! (`appsettings_hub.json`) accept.
//!
//! A template is literal text with variables:
//! - `{name}` binds one path segment (any text without `/`, possibly empty);
//! - `{name=default}` has a default used when binding without a value;
//! - `{*name}` is allowed only at the very end (it still binds one segment, as upstream);
//! - the variable `{params}` of an inbound template holds a property bag, decoded into separate
//!   properties ([`super::propbag::decode_raw`]); a blank bag adds nothing.
//!
//! Inbound templates are tried in order and the first that matches the whole topic wins.
//! Outbound templates are looked up by endpoint name and bound from the message's system
//! properties; when there are properties to send, the address loses its trailing `/`s and gets
//! `/{bag}`.
//!
//! Deviation from upstream, on purpose: a template must match the whole topic. IoT Edge turns a
//! template into a regular expression anchored only at the end and copies its literal text into
//! the expression unescaped, so `x/a/1/c` matches `a/{b}/c` there and `$`, `?`, `.` in literal
//! text act as regex operators. Here literal text is literal.

use verge_message::PropertyMap;

use super::propbag::{BagError, decode_raw, encode_pairs};

/// The name of the variable that holds a property bag.
pub const PARAMS: &str = "params";

/// Why a template set could not be built or a template not bound.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// No inbound or no outbound templates: IoT Edge refuses such a configuration.
    #[error("invalid topic template configuration: {0}")]
    InvalidConfiguration(&'static str),
    /// A template that does not parse.
    #[error("invalid topic template {template:?}: {reason}")]
    Syntax {
        /// The template.
        template: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two outbound templates with one endpoint name.
    #[error("two outbound topic templates are named {0:?}")]
    DuplicateEndpoint(String),
    /// No outbound template of that endpoint name.
    #[error("no outbound topic template is named {0:?}")]
    UnknownEndpoint(String),
    /// A variable without a value or default.
    #[error("no value for topic template variable {0:?}")]
    MissingVariable(String),
    /// The bound address is empty.
    #[error("the topic template gives an empty address")]
    EmptyAddress,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable {
        name: String,
        default: Option<String>,
    },
}

/// One topic template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicTemplate {
    parts: Vec<Part>,
}

impl TopicTemplate {
    /// Parse `template`.
    pub fn new(template: &str) -> Result<Self, TemplateError> {
        let syntax = |reason| TemplateError::Syntax {
            template: template.to_owned(),
            reason,
        };
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            let after = rest.get(start + 1..).unwrap_or_default();
            let end = after
                .find('}')
                .ok_or_else(|| syntax("a variable is never closed"))?;
            let definition = after.get(..end).unwrap_or_default();
            let tail = after.get(end + 1..).unwrap_or_default();
            if definition.contains('{') {
                return Err(syntax("a variable definition contains '{'"));
            }
            let definition = match definition.strip_prefix('*') {
                Some(_) if !tail.is_empty() => {
                    return Err(syntax("a wildcard variable is not at the end"));
                }
                Some(d) => d,
                None => definition,
            };
            let (name, default) = match definition.split_once('=') {
                Some((name, default)) => (name, Some(default.to_owned())),
                None => (definition, None),
            };
            if name.is_empty() {
                return Err(syntax("a variable has no name"));
            }
            if start > 0 {
                parts.push(Part::Literal(
                    rest.get(..start).unwrap_or_default().to_owned(),
                ));
            }
            parts.push(Part::Variable {
                name: name.to_owned(),
                default,
            });
            rest = tail;
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The variables of `topic` if the template matches all of it: (name, value) in template
    /// order.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Vec<(&str, &'t str)>> {
        let mut bound = Vec::new();
        match_parts(&self.parts, topic, &mut bound).then_some(bound)
    }

    /// Write the template into `out` (replacing its content) with variables from `vars`.
    pub fn bind(&self, vars: &PropertyMap, out: &mut String) -> Result<(), TemplateError> {
        out.clear();
        for part in &self.parts {
            let value = match part {
                Part::Literal(text) => text.as_str(),
                Part::Variable { name, default } => match vars.get(name) {
                    Some(value) => value,
                    None => default
                        .as_deref()
                        .ok_or_else(|| TemplateError::MissingVariable(name.clone()))?,
                },
            };
            // Upstream never doubles a `/` where two parts meet.
            let value = if out.ends_with('/') {
                value.strip_prefix('/').unwrap_or(value)
            } else {
                value
            };
            out.push_str(value);
        }
        Ok(())
    }
}

/// Match `parts` against all of `topic`, pushing bound variables; backtracks over the lengths
/// a variable may take (longest first, like the upstream regular expression).
fn match_parts<'p, 't>(
    parts: &'p [Part],
    topic: &'t str,
    bound: &mut Vec<(&'p str, &'t str)>,
) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return topic.is_empty();
    };
    match first {
        Part::Literal(text) => topic
            .strip_prefix(text.as_str())
            .is_some_and(|after| match_parts(rest, after, bound)),
        Part::Variable { name, .. } => {
            let segment_end = topic.find('/').unwrap_or(topic.len());
            for end in (0..=segment_end).rev() {
                let (Some(value), Some(after)) = (topic.get(..end), topic.get(end..)) else {
                    continue; // not a char boundary
                };
                bound.push((name.as_str(), value));
                if match_parts(rest, after, bound) {
                    return true;
                }
                bound.pop();
            }
            false
        }
    }
}

/// A set of inbound templates and named outbound templates, like IoT Edge's
/// `MessageAddressConversionConfiguration`.
#[derive(Clone, Debug)]
pub struct TemplateConverter {
    inbound: Vec<TopicTemplate>,
    outbound: Vec<(String, TopicTemplate)>,
}

impl TemplateConverter {
    /// Build the set; both lists must be non-empty and endpoint names unique.
    pub fn new<'a>(
        inbound: impl IntoIterator<Item = &'a str>,
        outbound: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, TemplateError> {
        let inbound = inbound
            .into_iter()
            .map(TopicTemplate::new)
            .collect::<Result<Vec<_>, _>>()?;
        let mut out: Vec<(String, TopicTemplate)> = Vec::new();
        for (name, template) in outbound {
            if out.iter().any(|(n, _)| n == name) {
                return Err(TemplateError::DuplicateEndpoint(name.to_owned()));
            }
            out.push((name.to_owned(), TopicTemplate::new(template)?));
        }
        if inbound.is_empty() {
            return Err(TemplateError::InvalidConfiguration("no inbound templates"));
        }
        if out.is_empty() {
            return Err(TemplateError::InvalidConfiguration("no outbound templates"));
        }
        Ok(Self {
            inbound,
            outbound: out,
        })
    }

    /// The properties `address` carries by the first inbound template that matches it (its
    /// variables, and the decoded bag of `{params}`), or `None` if none matches.
    pub fn parse_address(&self, address: &str) -> Result<Option<PropertyMap>, BagError> {
        let Some(bound) = self.inbound.iter().find_map(|t| t.matches(address)) else {
            return Ok(None);
        };
        let mut properties = PropertyMap::new();
        for (name, value) in bound {
            if name == PARAMS {
                decode_raw(value, &mut properties)?;
            } else {
                properties.insert(name, value);
            }
        }
        Ok(Some(properties))
    }

    /// Write the address of `endpoint` into `out` (replacing its content), bound from `vars`,
    /// then `/{bag}` of `to_send` if it holds anything.
    pub fn build_address<'a>(
        &self,
        endpoint: &str,
        vars: &PropertyMap,
        to_send: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
        out: &mut String,
    ) -> Result<(), TemplateError> {
        let (_, template) = self
            .outbound
            .iter()
            .find(|(name, _)| name == endpoint)
            .ok_or_else(|| TemplateError::UnknownEndpoint(endpoint.to_owned()))?;
        template.bind(vars, out)?;
        if out.is_empty() {
            return Err(TemplateError::EmptyAddress);
        }
        if out.trim().is_empty() {
            return Ok(()); // upstream appends no bag to a blank address
        }
        // `{address without trailing '/'}/{bag}`, or the address as bound when there is no bag.
        let bound_len = out.len();
        let trimmed_len = out.trim_end_matches('/').len();
        out.push('/');
        let bag_start = out.len();
        if encode_pairs(to_send, out) {
            // Only '/' characters lie between the two: char boundaries.
            out.replace_range(trimmed_len..bag_start, "/");
        } else {
            out.truncate(bound_len);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(template: &str) -> TopicTemplate {
        TopicTemplate::new(template).unwrap()
    }

    #[test]
    fn syntax() {
        assert!(TopicTemplate::new("a/{b").is_err());
        assert!(TopicTemplate::new("a/{{b}}").is_err());
        assert!(TopicTemplate::new("a/{}").is_err());
        assert!(TopicTemplate::new("a/{*b}/c").is_err());
        assert_eq!(t("a/{*b}").matches("a/x"), Some(vec![("b", "x")]));
        assert_eq!(t("a}/b").matches("a}/b"), Some(vec![]));
    }

    #[test]
    fn matching() {
        assert_eq!(t("a/{b}/c").matches("a//c"), Some(vec![("b", "")]));
        assert_eq!(t("a/{b}/c").matches("a/x/y/c"), None);
        assert_eq!(t("a/{b}/c").matches("xa/bee/c"), None);
        assert_eq!(
            t("a/{b}-{c}").matches("a/x-y-z"),
            Some(vec![("b", "x-y"), ("c", "z")])
        );
        assert_eq!(
            t("$iothub/methods/res/{statusCode}/?$rid={correlationId}")
                .matches("$iothub/methods/res/200/?$rid=ab"),
            Some(vec![("statusCode", "200"), ("correlationId", "ab")])
        );
        assert_eq!(t("a/{b}").matches("a/é"), Some(vec![("b", "é")]));
    }

    #[test]
    fn binding() {
        let vars: PropertyMap = [("b", "1"), ("s", "/x")].into_iter().collect();
        let mut out = String::new();
        t("a/{b}/{c=dflt}").bind(&vars, &mut out).unwrap();
        assert_eq!(out, "a/1/dflt");
        t("a/{s}").bind(&vars, &mut out).unwrap();
        assert_eq!(out, "a/x");
        assert_eq!(
            t("a/{z}").bind(&vars, &mut out),
            Err(TemplateError::MissingVariable("z".into()))
        );
    }

    #[test]
    fn addresses() {
        let c =
            TemplateConverter::new(["a/{b}/{params}"], [("E", "x/{b}/"), ("Z", "{z=}")]).unwrap();
        let vars: PropertyMap = [("b", "1")].into_iter().collect();
        let mut out = String::new();
        c.build_address("E", &vars, [("k", Some("v w"))], &mut out)
            .unwrap();
        assert_eq!(out, "x/1/k=v%20w");
        c.build_address("E", &vars, [], &mut out).unwrap();
        assert_eq!(out, "x/1/");
        assert_eq!(
            c.build_address("Z", &vars, [], &mut out),
            Err(TemplateError::EmptyAddress)
        );
        let props = c.parse_address("a/1/p=%24&q").unwrap().unwrap();
        let props: Vec<_> = props.iter().collect();
        assert_eq!(props, [("b", Some("1")), ("p", Some("$")), ("q", None)]);
        assert!(c.parse_address("a/1/p=1=2").is_err());
        assert_eq!(c.parse_address("b/1/p"), Ok(None));
        assert!(TemplateConverter::new(["a"], [("E", "x"), ("E", "y")]).is_err());
        assert!(TemplateConverter::new([], [("E", "x")]).is_err());
        assert!(TemplateConverter::new(["a"], []).is_err());
    }
}
