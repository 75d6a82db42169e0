//! Topic filters: a prefix, or a pattern with wildcards, for fabric
//! subscriptions ([`Node::subscribe_matching`](crate::node::Node::subscribe_matching)).
//!
//! Topics are dot-separated tokens (`orders.eu.paid`). A filter is either
//! a plain **prefix** (no wildcard token: matches every topic that starts
//! with it, as ZeroMQ's SUB filter and [`Node::subscribe`](crate::node::Node::subscribe)
//! do), or a **pattern** with whole-token wildcards, as NATS has them:
//! `*` matches exactly one token, `>` (last token only) matches one or
//! more. `orders.*.paid` matches `orders.eu.paid`, not `orders.paid` or
//! `orders.eu.x.paid`; `orders.>` matches `orders.eu` and `orders.eu.paid`,
//! not `orders`.
//!
//! Guarantees: a pattern is matched in full by zfabric on the receiving
//! node; what travels is decided by its literal prefix (the tokens before
//! the first wildcard, with their dot: `orders.` for `orders.*.paid`),
//! which is what a node advertises, so publishers send only topics that
//! can match, and the receiver drops the rest of that prefix's topics
//! before any queue (not counted as a drop: nothing subscribed to them).
//! Parsing is pure and checked: an empty token next to a wildcard, or `>`
//! anywhere but last, is a [`TopicFilterError`]. Does not: interpret
//! Zenoh-style `**` or `/` separators, or match inside a token (`ord*` is
//! a literal prefix, not a pattern).

use std::fmt;

/// One token of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// This exact token.
    Literal(String),
    /// Any one token (`*`).
    One,
    /// One or more tokens, to the end (`>`).
    Rest,
}

/// A parsed topic filter: a prefix or a pattern (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    text: String,
    /// `None`: a plain prefix.
    tokens: Option<Vec<Token>>,
}

/// Why a topic filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicFilterError {
    /// `>` must be the last token.
    #[error("topic filter {0:?}: `>` must be the last token")]
    RestNotLast(String),
    /// A pattern has an empty token (`orders..*`, `.*`, `*.`).
    #[error("topic filter {0:?}: a pattern has an empty token")]
    EmptyToken(String),
}

impl TopicFilter {
    /// Parses `text`: a pattern if a whole token is `*` or `>`, else a
    /// prefix.
    pub fn parse(text: &str) -> Result<TopicFilter, TopicFilterError> {
        let parts: Vec<&str> = text.split('.').collect();
        if !parts.iter().any(|p| *p == "*" || *p == ">") {
            return Ok(TopicFilter {
                text: text.to_owned(),
                tokens: None,
            });
        }
        let last = parts.len() - 1;
        let mut tokens = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            tokens.push(match *p {
                "" => return Err(TopicFilterError::EmptyToken(text.to_owned())),
                "*" => Token::One,
                ">" if i == last => Token::Rest,
                ">" => return Err(TopicFilterError::RestNotLast(text.to_owned())),
                lit => Token::Literal(lit.to_owned()),
            });
        }
        Ok(TopicFilter {
            text: text.to_owned(),
            tokens: Some(tokens),
        })
    }

    /// A plain prefix filter (no wildcard parsing: `*` is literal).
    pub fn prefix(prefix: impl Into<String>) -> TopicFilter {
        TopicFilter {
            text: prefix.into(),
            tokens: None,
        }
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is a pattern (has a wildcard token).
    pub fn is_pattern(&self) -> bool {
        self.tokens.is_some()
    }

    /// What every matching topic starts with: the prefix itself, or a
    /// pattern's tokens before its first wildcard, each with its dot
    /// (`""` for a pattern that starts with one).
    pub fn literal_prefix(&self) -> String {
        match &self.tokens {
            None => self.text.clone(),
            Some(tokens) => {
                let mut s = String::new();
                for t in tokens {
                    match t {
                        Token::Literal(l) => {
                            s.push_str(l);
                            s.push('.');
                        }
                        Token::One | Token::Rest => break,
                    }
                }
                s
            }
        }
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &str) -> bool {
        let Some(tokens) = &self.tokens else {
            return topic.starts_with(self.text.as_str());
        };
        let mut parts = topic.split('.');
        for t in tokens {
            match t {
                Token::Rest => return parts.next().is_some_and(|p| !p.is_empty()),
                Token::One => {
                    if parts.next().is_none_or(str::is_empty) {
                        return false;
                    }
                }
                Token::Literal(l) => {
                    if parts.next() != Some(l.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(filter: &str, topic: &str) -> bool {
        TopicFilter::parse(filter).unwrap().matches(topic)
    }

    #[test]
    fn a_filter_without_wildcard_tokens_is_a_prefix() {
        let f = TopicFilter::parse("orders.").unwrap();
        assert!(!f.is_pattern());
        assert!(f.matches("orders.eu.paid"));
        assert!(!f.matches("order"));
        assert!(m("ord", "orders"), "a prefix matches inside a token");
        assert!(!TopicFilter::parse("ord*").unwrap().is_pattern());
        assert!(m("", "anything"));
        assert_eq!(f.literal_prefix(), "orders.");
    }

    #[test]
    fn a_star_matches_exactly_one_non_empty_token() {
        assert!(m("orders.*.paid", "orders.eu.paid"));
        assert!(!m("orders.*.paid", "orders.paid"));
        assert!(!m("orders.*.paid", "orders.eu.x.paid"));
        assert!(!m("orders.*.paid", "orders..paid"));
        assert!(!m("orders.*.paid", "orders.eu.paid.x"));
        assert!(m("*", "orders"));
        assert!(!m("*", "orders.eu"));
        assert!(m("*.eu", "orders.eu"));
    }

    #[test]
    fn a_rest_matches_one_or_more_tokens_at_the_end() {
        assert!(m("orders.>", "orders.eu"));
        assert!(m("orders.>", "orders.eu.paid"));
        assert!(!m("orders.>", "orders"));
        assert!(!m("orders.>", "orders."));
        assert!(m("orders.*.>", "orders.eu.paid.late"));
        assert!(!m("orders.*.>", "orders.eu"));
        assert!(m(">", "a.b.c"));
    }

    #[test]
    fn a_patterns_literal_prefix_is_its_tokens_before_the_first_wildcard() {
        let p = |s: &str| TopicFilter::parse(s).unwrap().literal_prefix();
        assert_eq!(p("orders.*.paid"), "orders.");
        assert_eq!(p("orders.eu.>"), "orders.eu.");
        assert_eq!(p("*.paid"), "");
        // Every topic a pattern matches starts with its literal prefix.
        for (f, t) in [("orders.*.paid", "orders.eu.paid"), ("a.b.>", "a.b.c.d")] {
            assert!(m(f, t) && t.starts_with(&p(f)));
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        assert_eq!(
            TopicFilter::parse("orders.>.paid"),
            Err(TopicFilterError::RestNotLast("orders.>.paid".into()))
        );
        assert_eq!(
            TopicFilter::parse("orders..*"),
            Err(TopicFilterError::EmptyToken("orders..*".into()))
        );
        assert!(TopicFilter::parse("*.").is_err());
        assert!(TopicFilter::parse(".*").is_err());
    }
}
