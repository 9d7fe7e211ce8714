// Package bench holds the pieces the side-by-side benchmarks share: the
// peers' Redis adapters written here (a naive dependency cache in the style
// of simple-dep-cache, a Redis cacher for go-gorm/caches), a go-redis hook
// that counts round trips, and the statistics the reports print.
//
// It is its own module so that users of depcache never download the peers.
package bench
