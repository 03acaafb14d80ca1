//! A request's query parameters, read and checked one by one: each error
//! names its parameter.

use super::ApiError;
use crate::model::alert::{AlertKind, AlertQuery, Severity};
use crate::model::query::{Filter, TimeRange};
use crate::query;

/// The query string's parameters.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `raw`, refusing a parameter that is not in `allowed` or is
    /// given twice.
    pub fn parse(raw: Option<&str>, allowed: &[&'static str]) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (i, (k, _)) in pairs.iter().enumerate() {
            let Some(&name) = allowed.iter().find(|a| **a == k.as_str()) else {
                return Err(ApiError {
                    status: axum::http::StatusCode::BAD_REQUEST,
                    param: None,
                    column: None,
                    message: format!(
                        "unknown parameter {k:?}: this endpoint takes {}",
                        allowed.join(", ")
                    ),
                });
            };
            if pairs[..i].iter().any(|(p, _)| p == k) {
                return Err(ApiError::param(name, "given twice"));
            }
        }
        Ok(Params { pairs })
    }

    /// The value of `name`, if given (an empty value counts as not given).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The filter (`filter`, in the query language; none: every flow).
    pub fn filter(&self) -> Result<Filter, ApiError> {
        query::parse(self.get("filter").unwrap_or("")).map_err(|e| {
            let mut err = ApiError::param("filter", e.to_string());
            err.column = Some(e.column);
            err
        })
    }

    /// `since` and `until`: RFC 3339 or a duration before `now_ns`.
    pub fn range(&self, now_ns: u64) -> Result<TimeRange, ApiError> {
        let bound = |name: &'static str| {
            self.get(name)
                .map(|v| query::parse_time(v, now_ns).map_err(|e| ApiError::param(name, e)))
                .transpose()
        };
        let range = TimeRange {
            since_ns: bound("since")?,
            until_ns: bound("until")?,
        };
        if let (Some(s), Some(u)) = (range.since_ns, range.until_ns)
            && u <= s
        {
            return Err(ApiError::param("until", "must be after since"));
        }
        Ok(range)
    }

    /// A whole number in `lo..=hi` (`default` when not given).
    pub fn number(
        &self,
        name: &'static str,
        default: u64,
        lo: u64,
        hi: u64,
    ) -> Result<u64, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(default);
        };
        match v.parse::<u64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(ApiError::param(
                name,
                format!("{v:?}: expected a whole number from {lo} to {hi}"),
            )),
        }
    }

    /// The alerts asked for: `kind`, `min_severity`, `asset`, `since`,
    /// `until`, `limit` (default `default_limit`).
    pub fn alert_query(&self, now_ns: u64, default_limit: u64) -> Result<AlertQuery, ApiError> {
        let range = self.range(now_ns)?;
        let kind = self
            .get("kind")
            .map(|k| {
                AlertKind::parse(k)
                    .ok_or_else(|| ApiError::param("kind", format!("{k:?}: unknown alert kind")))
            })
            .transpose()?;
        let min_severity = self
            .get("min_severity")
            .map(|s| {
                Severity::parse(s).ok_or_else(|| {
                    ApiError::param(
                        "min_severity",
                        format!("{s:?}: expected low, medium, high or critical"),
                    )
                })
            })
            .transpose()?;
        Ok(AlertQuery {
            since_ns: range.since_ns,
            until_ns: range.until_ns,
            kind,
            min_severity,
            asset: self.get("asset").map(str::to_string),
            limit: self.number("limit", default_limit, 1, 100_000)? as usize,
        })
    }

    /// A flag: `true`/`1` or `false`/`0` (`false` when not given).
    pub fn flag(&self, name: &'static str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(v) => Err(ApiError::param(
                name,
                format!("{v:?}: expected true or false"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked_and_named() {
        let p = Params::parse(
            Some("filter=dst%20port%20502&limit=5"),
            &["filter", "limit"],
        )
        .unwrap();
        assert_eq!(p.get("filter"), Some("dst port 502"));
        assert_eq!(p.number("limit", 10, 1, 100).unwrap(), 5);
        let e = p.number("limit", 10, 6, 100).unwrap_err();
        assert_eq!(e.param, Some("limit"));
        let e = Params::parse(Some("filtre=x"), &["filter"]).unwrap_err();
        assert!(e.message.contains("unknown parameter \"filtre\""), "{e:?}");
        let e = Params::parse(Some("limit=1&limit=2"), &["limit"]).unwrap_err();
        assert_eq!(e.param, Some("limit"));
        let p = Params::parse(Some("filter=port+and"), &["filter"]).unwrap();
        let e = p.filter().unwrap_err();
        assert_eq!((e.param, e.column.is_some()), (Some("filter"), true));
        let p = Params::parse(Some("since=2h&until=yesterday"), &["since", "until"]).unwrap();
        let e = p.range(10_000_000_000_000).unwrap_err();
        assert_eq!(e.param, Some("until"));
        let p = Params::parse(Some("since=1h&until=2h"), &["since", "until"]).unwrap();
        assert_eq!(
            p.range(10_000_000_000_000).unwrap_err().param,
            Some("until")
        );
        let p = Params::parse(Some("explain=yes"), &["explain"]).unwrap();
        assert_eq!(p.flag("explain").unwrap_err().param, Some("explain"));
        // Empty values count as not given.
        let p = Params::parse(Some("filter=&limit="), &["filter", "limit"]).unwrap();
        assert_eq!(p.number("limit", 10, 1, 100).unwrap(), 10);
        assert!(p.filter().is_ok());
    }
}
