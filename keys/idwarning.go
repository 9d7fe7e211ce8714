package keys

import (
	"log/slog"
	"reflect"
	"slices"
	"strings"
)

// A struct keyed by its ID field alone (rule 3's conventional ID, or rule
// 4) that has other exported fields is most likely a query-arguments
// struct: Q{ID: 1, Page: 2} and Q{ID: 1, Page: 1} get one key, and a
// memoized function returns one's result for the other. The rule stays
// (it is the primary-key rule of models), but the first time such a type
// is keyed this way a warning names it and the fields left out. Tags
// (`depcache:"key"`, a GORM primary key) and CacheKey are explicit choices
// and never warn.

// fieldsBeside returns the exported fields of t, flattened through
// embedded structs, other than the one at path and those tagged
// `depcache:"-"`.
func fieldsBeside(t reflect.Type, path []int) []string {
	var names []string
	walkFields(t, nil, map[reflect.Type]bool{t: true}, false, func(f reflect.StructField, p []int) {
		if !slices.Equal(p, path) && f.Tag.Get("depcache") != "-" {
			names = append(names, f.Name)
		}
	})
	return names
}

// warnIgnored logs, once per type, that values of the type are keyed by
// their ID alone.
func (ti *typeInfo) warnIgnored() {
	ti.warnedOnce.Do(func() {
		slog.Default().Warn("keys: "+ti.name+" is keyed by its ID field alone; its other fields are not part of the key, so values that differ only there share one cache entry. If it carries query arguments, give it a CacheKey method or rename the field",
			"type", ti.name, "ignored_fields", strings.Join(ti.ignored, ","))
	})
}
