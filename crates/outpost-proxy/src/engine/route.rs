//! Where a request goes: the origin URL, the admin rule that matches, the
//! cache key, and which variant of a URL whose responses vary.

use super::*;

/// Where a request goes: the origin URL and its cache key.
#[derive(Debug, Clone)]
pub struct Route {
    pub upstream_uri: Uri,
    pub key: CacheKey,
    /// The admin rule that applies (as it was when the request arrived).
    pub rule: Option<Arc<crate::config::CacheOverride>>,
    /// The upstream is one of the edge's reverse-proxy origins, so the edge
    /// is its surrogate and obeys `Surrogate-Control`.
    pub surrogate: bool,
    /// Whether a client chose the upstream (forward, transparent), so the
    /// destination guard applies, or the admin did (reverse, channels).
    pub reach: Reach,
}

impl Route {
    pub fn new(upstream_uri: Uri) -> Result<Self, outpost_http::KeyError> {
        let key = CacheKey::from_uri(&upstream_uri)?;
        Ok(Self {
            upstream_uri,
            key,
            rule: None,
            surrogate: false,
            reach: Reach::Guarded,
        })
    }
}

/// Variants one URL may have stored at once: a header like `User-Agent`
/// or `Cookie` in `Vary` would otherwise let clients add one copy each.
pub const MAX_VARIANTS: usize = 32;

/// How long a newly recorded variant key counts as stored before its
/// object appears in the store.
pub(super) const VARIANT_CREATE_GRACE: Duration = Duration::from_secs(10);

/// The variant map is rebuilt from the store when it reaches this size (or
/// twice its size after the last rebuild).
pub(super) const VARIANT_MAP_MIN: usize = 10_000;

#[derive(Default)]
pub(super) struct VariantSet {
    pub(super) names: Vec<http::HeaderName>,
    /// Each variant key, with when it was first recorded.
    pub(super) keys: HashMap<CacheKey, std::time::Instant>,
}

/// The variants the store holds, from their keys (at startup).
pub(super) fn known_variants(store: &Store) -> HashMap<CacheKey, VariantSet> {
    let mut map: HashMap<CacheKey, VariantSet> = HashMap::new();
    let separator = vary::VARIANT_SEPARATOR.to_string();
    for key in store.keys_containing(&separator).unwrap_or_default() {
        if let Some((base, names)) = vary::split_variant(key.as_str()) {
            let set = map.entry(base).or_default();
            set.names = names;
            set.keys.insert(key, std::time::Instant::now());
        }
    }
    map
}

impl Engine {
    /// The route with the key of the variant these request headers select,
    /// when the URL's responses are known to vary.
    pub fn select_variant(&self, mut route: Route, headers: &HeaderMap) -> Route {
        let base = vary::url_key(&route.key);
        route.key = match lock(&self.variants).get(&base) {
            Some(set) if !set.names.is_empty() => vary::variant_key(&base, &set.names, headers),
            // The URL does not vary (or no longer does): one entry for all.
            _ => base,
        };
        route
    }

    /// How many variants of `url_key` the edge knows of.
    pub fn variant_count(&self, url_key: &CacheKey) -> usize {
        lock(&self.variants)
            .get(url_key)
            .map_or(0, |set| set.keys.len())
    }

    /// Where a request for `uri` goes: host aliases resolved, the first
    /// matching admin rule found, the query dropped from the key if the
    /// rule says so.
    pub fn route(&self, uri: Uri, reach: Reach) -> Result<Route, outpost_http::KeyError> {
        let uri = self.canonical_uri(uri);
        let host = uri.host().unwrap_or("").to_ascii_lowercase();
        let rule = self
            .rules()
            .overrides
            .iter()
            .find(|o| o.matches(&host, uri.path()))
            .cloned();
        let key = match rule.as_deref() {
            Some(o) if o.ignore_query && uri.query().is_some() => {
                let mut parts = uri.clone().into_parts();
                parts.path_and_query = uri.path().parse().ok();
                let without = Uri::from_parts(parts)
                    .map_err(|e| outpost_http::KeyError::Invalid(e.to_string()))?;
                CacheKey::from_uri(&without)?
            }
            _ => CacheKey::from_uri(&uri)?,
        };
        let authority = uri.authority();
        let surrogate = authority.is_some()
            && (self.config.origin.iter())
                .chain(self.config.sites.iter().map(|s| &s.origin))
                .any(|origin| origin.authority() == authority && origin.scheme() == uri.scheme());
        Ok(Route {
            upstream_uri: uri,
            key,
            rule,
            surrogate,
            reach,
        })
    }

    pub(super) fn rule<'r>(&self, route: &'r Route) -> Option<&'r crate::config::CacheOverride> {
        route.rule.as_deref()
    }

    /// The key a response is stored under: the URL's, or the variant the
    /// leading request selects when the response varies; `None` when the
    /// URL already has `MAX_VARIANTS` other variants stored. Records what it
    /// learns for later lookups. The store is only read with the variant
    /// map unlocked: every GET takes that lock to select its variant.
    pub(super) fn variant_to_store(
        &self,
        route: &Route,
        client: &HeaderMap,
        names: Vec<http::HeaderName>,
    ) -> Option<CacheKey> {
        let base = vary::url_key(&route.key);
        if names.is_empty() {
            // No longer varies: one entry for everyone again.
            let old = lock(&self.variants).remove(&base);
            for key in old.into_iter().flat_map(|set| set.keys.into_keys()) {
                let _ = self.store.purge(&key);
            }
            return Some(base);
        }
        let mut normalized = client.clone();
        vary::normalize_request(&mut normalized);
        let key = vary::variant_key(&base, &names, &normalized);
        if lock(&self.variants).len() >= self.variant_map_limit.load(Ordering::Relaxed) {
            self.rebuild_variant_map();
        }
        if self.variant_places_taken(&base, &key) {
            self.forget_evicted_variants(&base);
        }
        let mut variants = lock(&self.variants);
        let set = variants.entry(base).or_default();
        if !set.keys.contains_key(&key) && set.keys.len() >= MAX_VARIANTS {
            tracing::debug!(key = %key, max = MAX_VARIANTS, "variant limit reached; not stored");
            return None;
        }
        set.names = names;
        set.keys
            .entry(key.clone())
            .or_insert_with(std::time::Instant::now);
        Some(key)
    }

    /// Whether `key` would be one variant too many for `base`.
    pub(super) fn variant_places_taken(&self, base: &CacheKey, key: &CacheKey) -> bool {
        lock(&self.variants)
            .get(base)
            .is_some_and(|set| !set.keys.contains_key(key) && set.keys.len() >= MAX_VARIANTS)
    }

    /// Drops `base`'s variant keys whose objects eviction removed. A key
    /// recorded moments ago may not be in the store yet (its object is
    /// being created) and keeps its place.
    pub(super) fn forget_evicted_variants(&self, base: &CacheKey) {
        let candidates: Vec<CacheKey> = lock(&self.variants)
            .get(base)
            .map(|set| {
                set.keys
                    .iter()
                    .filter(|(_, at)| at.elapsed() >= VARIANT_CREATE_GRACE)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let gone: Vec<CacheKey> = candidates
            .into_iter()
            .filter(|k| self.store.get(k).ok().flatten().is_none())
            .collect();
        if let Some(set) = lock(&self.variants).get_mut(base) {
            for k in &gone {
                set.keys.remove(k);
            }
        }
    }

    /// Rebuilds the variant map from the store: entries of URLs whose
    /// variants were all evicted linger otherwise. Keys recorded meanwhile
    /// (objects still being created) are kept.
    pub(super) fn rebuild_variant_map(&self) {
        let mut rebuilt = known_variants(&self.store);
        let mut variants = lock(&self.variants);
        for (url, set) in variants.drain() {
            let recent = set
                .keys
                .into_iter()
                .filter(|(_, at)| at.elapsed() < VARIANT_CREATE_GRACE);
            let entry = rebuilt.entry(url).or_default();
            entry.keys.extend(recent);
            if entry.names.is_empty() {
                entry.names = set.names;
            }
        }
        *variants = rebuilt;
        self.variant_map_limit
            .store((variants.len() * 2).max(VARIANT_MAP_MIN), Ordering::Relaxed);
    }
}
