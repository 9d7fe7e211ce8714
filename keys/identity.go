package keys

import (
	"database/sql/driver"
	"encoding"
	"reflect"
	"strings"
	"sync"
	"time"
)

var (
	timeType          = reflect.TypeFor[time.Time]()
	cacheKeyerType    = reflect.TypeFor[CacheKeyer]()
	valuerType        = reflect.TypeFor[driver.Valuer]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// typeInfo is what keys needs to know about a type, computed once.
type typeInfo struct {
	keyer    bool // the type implements CacheKeyer
	keyerPtr bool // only its pointer type does
	valuer   bool // the type implements driver.Valuer
	valPtr   bool // only its pointer type does
	text     bool // the type implements encoding.TextMarshaler
	textPtr  bool // only its pointer type does

	// structs only
	name   string      // type name without package paths
	rules  []identRule // rules 2-4 in priority order
	fields []fieldInfo // fields of the canonical encoding
	opaque bool        // has fields, none of them encoded

	// ignored names the exported fields an identity by name (ID, Id)
	// leaves out of the key; warned about once per type (warnIgnored).
	ignored    []string
	warnedOnce sync.Once
}

// identRule is one way to read a struct's identity: the fields whose
// formatted values, joined with ':', follow "Type::".
type identRule struct {
	paths [][]int
	// byName: the conventional ID or Id field, chosen by its name alone
	// (no tag, no CacheKey), which a query-arguments struct can carry by
	// accident.
	byName bool
}

type fieldInfo struct {
	name  string
	index int
}

var typeInfos sync.Map // reflect.Type -> *typeInfo

func infoOf(t reflect.Type) *typeInfo {
	if ti, ok := typeInfos.Load(t); ok {
		return ti.(*typeInfo)
	}
	ti := newTypeInfo(t)
	actual, _ := typeInfos.LoadOrStore(t, ti)
	return actual.(*typeInfo)
}

func newTypeInfo(t reflect.Type) *typeInfo {
	ti := &typeInfo{}
	if t.Kind() == reflect.Interface {
		return ti // the dynamic value is looked at instead
	}
	pt := reflect.PointerTo(t)
	ti.keyer = t.Implements(cacheKeyerType)
	ti.keyerPtr = !ti.keyer && t.Kind() != reflect.Pointer && pt.Implements(cacheKeyerType)
	ti.valuer = t.Implements(valuerType)
	ti.valPtr = !ti.valuer && t.Kind() != reflect.Pointer && pt.Implements(valuerType)
	ti.text = t.Implements(textMarshalerType)
	ti.textPtr = !ti.text && t.Kind() != reflect.Pointer && pt.Implements(textMarshalerType)
	if t.Kind() != reflect.Struct || t == timeType {
		return ti
	}
	ti.name = typeName(t)

	// Rule 2: fields tagged depcache:"key".
	var tagged [][]int
	walkFields(t, nil, map[reflect.Type]bool{t: true}, false, func(f reflect.StructField, path []int) {
		if hasTagOption(f.Tag.Get("depcache"), "key") {
			tagged = append(tagged, path)
		}
	})
	if len(tagged) > 0 {
		ti.rules = append(ti.rules, identRule{paths: tagged})
	}
	// Rule 3: GORM primary key fields, else the ID field.
	var pks [][]int
	walkFields(t, nil, map[reflect.Type]bool{t: true}, true, func(f reflect.StructField, path []int) {
		if isGormPrimaryKey(f.Tag.Get("gorm")) {
			pks = append(pks, path)
		}
	})
	if len(pks) > 0 {
		ti.rules = append(ti.rules, identRule{paths: pks})
	}
	// Rule 3 (conventional ID) and rule 4 (Id).
	for _, name := range []string{"ID", "Id"} {
		if f, ok := t.FieldByName(name); ok {
			ti.rules = append(ti.rules, identRule{paths: [][]int{f.Index}, byName: true})
			if ti.ignored == nil {
				ti.ignored = fieldsBeside(t, f.Index)
			}
		}
	}

	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		if f.Tag.Get("depcache") == "-" {
			continue
		}
		ti.fields = append(ti.fields, fieldInfo{name: f.Name, index: i})
	}
	ti.opaque = t.NumField() > 0 && len(ti.fields) == 0
	return ti
}

// walkFields calls fn with every exported field of t and its index path,
// descending into embedded structs (and, for GORM, into fields tagged
// gorm:"embedded") the way GORM flattens them.
func walkFields(t reflect.Type, prefix []int, seen map[reflect.Type]bool, gorm bool, fn func(reflect.StructField, []int)) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		path := append(append([]int(nil), prefix...), i)
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		flatten := f.Anonymous || gorm && hasGormSetting(f.Tag.Get("gorm"), "EMBEDDED")
		if flatten && ft.Kind() == reflect.Struct && ft != timeType &&
			!ft.Implements(valuerType) && !reflect.PointerTo(ft).Implements(valuerType) {
			if !seen[ft] {
				seen[ft] = true
				walkFields(ft, path, seen, gorm, fn)
				delete(seen, ft)
			}
			continue
		}
		fn(f, path)
	}
}

func hasTagOption(tag, opt string) bool {
	for part := range strings.SplitSeq(tag, ",") {
		if strings.TrimSpace(part) == opt {
			return true
		}
	}
	return false
}

// gormSettings yields the upper-cased names and values of a gorm tag's
// ';'-separated settings.
func gormSettings(tag string, fn func(name, value string) bool) {
	for part := range strings.SplitSeq(tag, ";") {
		name, value, _ := strings.Cut(part, ":")
		if !fn(strings.ToUpper(strings.TrimSpace(name)), strings.TrimSpace(value)) {
			return
		}
	}
}

func hasGormSetting(tag, want string) bool {
	found := false
	gormSettings(tag, func(name, _ string) bool {
		found = name == want
		return !found
	})
	return found
}

func isGormPrimaryKey(tag string) bool {
	pk := false
	gormSettings(tag, func(name, value string) bool {
		if name == "PRIMARYKEY" || name == "PRIMARY_KEY" {
			pk = !strings.EqualFold(value, "false")
			return false
		}
		return true
	})
	return pk
}

// typeName is t's name with every package path removed, also inside the
// type arguments of a generic type ("Page[pkg/x.User]" is "Page[User]").
// Unnamed types are "struct", "map" and so on.
func typeName(t reflect.Type) string {
	n := t.Name()
	if n == "" {
		return t.Kind().String()
	}
	if !strings.ContainsRune(n, '[') {
		return n
	}
	var b strings.Builder
	start := 0
	flush := func(end int) {
		tok := n[start:end]
		if i := strings.LastIndexByte(tok, '.'); i >= 0 {
			tok = tok[i+1:]
		}
		b.WriteString(tok)
	}
	for i := 0; i < len(n); i++ {
		switch n[i] {
		case '[', ']', ',', ' ', '*', '(', ')':
			flush(i)
			b.WriteByte(n[i])
			start = i + 1
		}
	}
	flush(len(n))
	return b.String()
}

// isBytes reports whether t, a slice type, holds bytes without an identity
// of their own.
func isBytes(t reflect.Type) bool {
	if t.Elem().Kind() != reflect.Uint8 {
		return false
	}
	ei := infoOf(t.Elem())
	return !ei.keyer && !ei.keyerPtr
}

// identity returns v's identity under rules 1-4. v is not an interface.
func identity(v reflect.Value, ti *typeInfo) (string, bool) {
	switch {
	case ti.keyer:
		if v.Kind() == reflect.Pointer && v.IsNil() || !v.CanInterface() {
			return "", false
		}
		return v.Interface().(CacheKeyer).CacheKey(), true
	case ti.keyerPtr:
		p, ok := addr(v)
		if !ok {
			return "", false
		}
		return p.Interface().(CacheKeyer).CacheKey(), true
	}
	if len(ti.rules) == 0 {
		return "", false
	}
	for _, r := range ti.rules {
		vals := make([]string, 0, len(r.paths))
		for _, path := range r.paths {
			f, err := v.FieldByIndexErr(path)
			if err != nil {
				break // behind a nil embedded pointer: try the next rule
			}
			vals = append(vals, formatValue(f, 0))
		}
		if len(vals) == len(r.paths) {
			if r.byName && len(ti.ignored) > 0 {
				ti.warnIgnored()
			}
			return ti.name + "::" + strings.Join(vals, ":"), true
		}
	}
	return "", false
}

// addr returns a pointer to v, or to a copy of v when v is not addressable.
func addr(v reflect.Value) (reflect.Value, bool) {
	if v.CanAddr() {
		if p := v.Addr(); p.CanInterface() {
			return p, true
		}
		return reflect.Value{}, false
	}
	if !v.CanInterface() {
		return reflect.Value{}, false
	}
	p := reflect.New(v.Type())
	p.Elem().Set(v)
	return p, true
}
