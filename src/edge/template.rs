//! Path templates: `/v1/users/{id}/orders/{order}` matched against request
//! paths, with the named segments captured.
//!
//! Guarantees: a template is absolute, its parameters are whole segments
//! with distinct, non-empty names; a path matches when it has the same
//! number of segments and every literal one is equal (a trailing `/` is
//! one more, empty, segment). Captured values are taken as they are in
//! the path, percent-escapes included. Does not: match prefixes, globs or
//! query strings.

use std::fmt;
use std::str::FromStr;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Must equal this text.
    Literal(String),
    /// Captures the segment under this name.
    Param(String),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
}

/// Why a path template is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// It does not start with `/`.
    #[error("path template {0:?} does not start with '/'")]
    NotAbsolute(String),
    /// A `{}` with no name, or braces that are not a whole segment.
    #[error("path template {0:?}: a parameter must be a whole segment `{{name}}`")]
    BadParam(String),
    /// The same parameter name twice.
    #[error("path template {template:?} names parameter {name:?} twice")]
    DuplicateParam {
        /// The template.
        template: String,
        /// The repeated name.
        name: String,
    },
}

impl FromStr for PathTemplate {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, TemplateError> {
        let Some(rest) = s.strip_prefix('/') else {
            return Err(TemplateError::NotAbsolute(s.to_string()));
        };
        let mut segments = Vec::new();
        for seg in rest.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                if name.is_empty() || name.contains(['{', '}']) {
                    return Err(TemplateError::BadParam(s.to_string()));
                }
                if segments
                    .iter()
                    .any(|x| matches!(x, Segment::Param(n) if n == name))
                {
                    return Err(TemplateError::DuplicateParam {
                        template: s.to_string(),
                        name: name.to_string(),
                    });
                }
                segments.push(Segment::Param(name.to_string()));
            } else if seg.contains(['{', '}']) {
                return Err(TemplateError::BadParam(s.to_string()));
            } else {
                segments.push(Segment::Literal(seg.to_string()));
            }
        }
        Ok(PathTemplate {
            text: s.to_string(),
            segments,
        })
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PathTemplate {
    /// The template as written (the `route` label of the edge's metrics).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parameter names, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(n) => Some(n.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The captured parameters if `path` (without its query) matches.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let rest = path.strip_prefix('/')?;
        let mut captured = Vec::new();
        let mut parts = rest.split('/');
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(n) => captured.push((n.clone(), part.to_string())),
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(captured)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_captures_whole_segments_and_nothing_else() {
        let t: PathTemplate = "/v1/users/{id}/orders/{order}".parse().unwrap();
        assert_eq!(t.params().collect::<Vec<_>>(), ["id", "order"]);
        assert_eq!(
            t.matches("/v1/users/42/orders/7"),
            Some(vec![
                ("id".into(), "42".into()),
                ("order".into(), "7".into())
            ])
        );
        assert_eq!(t.matches("/v1/users/42/orders"), None);
        assert_eq!(t.matches("/v1/users/42/orders/7/x"), None);
        assert_eq!(t.matches("/v1/users//orders/7"), None);
        assert_eq!(t.matches("/v2/users/42/orders/7"), None);
        let root: PathTemplate = "/".parse().unwrap();
        assert_eq!(root.matches("/"), Some(vec![]));
        assert_eq!(root.matches("/x"), None);
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        assert!(matches!(
            "v1/x".parse::<PathTemplate>(),
            Err(TemplateError::NotAbsolute(_))
        ));
        for bad in ["/v1/{}", "/v1/a{id}", "/v1/{id}x", "/v1/{a{b}}"] {
            assert!(
                matches!(bad.parse::<PathTemplate>(), Err(TemplateError::BadParam(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "/{a}/{a}".parse::<PathTemplate>(),
            Err(TemplateError::DuplicateParam { .. })
        ));
    }
}
