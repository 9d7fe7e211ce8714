package gormplugin_test

import (
	"context"
	"strings"
	"testing"

	"github.com/depcache/go-depcache/gormplugin"
)

// A nil ctx is context.Background() for the plugin's functions, as for
// depcache's, and a nil manager or *gorm.DB is an error naming it: each of
// these panicked.
func TestNilArgumentsAreNotPanics(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		var nilCtx context.Context
		var users []User
		noErr(t, "DB(nil ctx).Find", gormplugin.DB(nilCtx, e.db).Find(&users).Error)
		if len(users) != len(seedUsers) {
			t.Fatalf("DB(nil ctx).Find read %d users, want %d", len(users), len(seedUsers))
		}
		p := gormplugin.New(e.m)
		if _, err := p.InvalidateDependency(nilCtx, gormplugin.ListTag("users")); err != nil {
			t.Fatalf("Plugin.InvalidateDependency(nil ctx): %v", err)
		}
		if err := p.FlushOutbox(nilCtx); err != nil {
			t.Fatalf("Plugin.FlushOutbox(nil ctx): %v", err)
		}
		if _, err := gormplugin.SchemeTags(nilCtx, e.m, "users"); err != nil {
			t.Fatalf("SchemeTags(nil ctx): %v", err)
		}
		if _, err := gormplugin.SchemeTags(context.Background(), nil, "users"); err == nil || !strings.Contains(err.Error(), "manager") {
			t.Fatalf("SchemeTags(nil manager): %v, want an error naming the manager", err)
		}
		if _, err := gormplugin.ModelRowTag(nil, &User{ID: 1}); err == nil || !strings.Contains(err.Error(), "*gorm.DB") {
			t.Fatalf("ModelRowTag(nil db): %v, want an error naming the *gorm.DB", err)
		}
	})
}
