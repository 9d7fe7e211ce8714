package backendtest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/depcache/go-depcache/backends"
)

// testSets checks backends.Sets, for stores that implement it: a set
// grows up to its limit and no further, adding a member twice is no
// change, sets of different names and namespaces are apart, and Clear
// leaves them (a caller may remember a member it saw).
func testSets(t *testing.T, e *env) {
	s, ok := e.b.(backends.Sets)
	if !ok {
		t.Skip("the store does not implement backends.Sets")
	}
	other := e.in(e.ns + "x")
	t.Cleanup(func() {
		ctx := context.WithoutCancel(e.ctx)
		for _, ns := range []string{e.ns, other.ns} {
			for _, name := range []string{"schemes:posts", "schemes:users"} {
				if err := s.RemoveSet(ctx, ns, name); err != nil {
					t.Errorf("RemoveSet(%q, %q): %v", ns, name, err)
				}
			}
		}
	})
	add := func(ns, name, member string, limit int) bool {
		t.Helper()
		in, err := s.AddMember(e.ctx, ns, name, member, limit)
		if err != nil {
			t.Fatalf("AddMember(%q, %q, %q, %d): %v", ns, name, member, limit, err)
		}
		return in
	}
	members := func(ns, name string) []string {
		t.Helper()
		ms, err := s.Members(e.ctx, ns, name)
		if err != nil {
			t.Fatalf("Members(%q, %q): %v", ns, name, err)
		}
		slices.Sort(ms)
		return ms
	}
	if ms := members(e.ns, "schemes:posts"); len(ms) != 0 {
		t.Errorf("Members of a set never written = %q, want none", ms)
	}
	for _, m := range []string{"author_id", "", "author_id&published"} {
		if !add(e.ns, "schemes:posts", m, 3) {
			t.Errorf("AddMember(%q) below the limit = false, want true", m)
		}
	}
	if add(e.ns, "schemes:posts", "title", 3) {
		t.Errorf("AddMember beyond the limit = true, want false")
	}
	if !add(e.ns, "schemes:posts", "author_id", 3) {
		t.Errorf("AddMember of a member already there, at the limit = false, want true")
	}
	want := []string{"", "author_id", "author_id&published"}
	if ms := members(e.ns, "schemes:posts"); !slices.Equal(ms, want) {
		t.Errorf("Members = %q, want %q", ms, want)
	}
	add(e.ns, "schemes:users", "email", 3)
	add(other.ns, "schemes:posts", "title", 3)
	if ms := members(e.ns, "schemes:users"); !slices.Equal(ms, []string{"email"}) {
		t.Errorf("Members of another set = %q, want [email]", ms)
	}
	if ms := members(other.ns, "schemes:posts"); !slices.Equal(ms, []string{"title"}) {
		t.Errorf("Members in another namespace = %q, want [title]", ms)
	}
	if _, err := e.b.Clear(e.ctx, e.ns); err != nil {
		t.Fatal(err)
	}
	if ms := members(e.ns, "schemes:posts"); !slices.Equal(ms, want) {
		t.Errorf("Members after Clear = %q, want %q (sets survive Clear)", ms, want)
	}
	if _, err := s.AddMember(e.ctx, e.ns, "schemes:posts", "x", 0); !errors.Is(err, backends.ErrBadSet) {
		t.Errorf("AddMember with limit 0: %v, want ErrBadSet", err)
	}
	if _, err := s.AddMember(e.ctx, e.ns, "", "x", 1); !errors.Is(err, backends.ErrBadSet) {
		t.Errorf("AddMember to the set \"\": %v, want ErrBadSet", err)
	}
	if err := s.RemoveSet(e.ctx, e.ns, "schemes:users"); err != nil {
		t.Fatal(err)
	}
	if ms := members(e.ns, "schemes:users"); len(ms) != 0 {
		t.Errorf("Members after RemoveSet = %q, want none", ms)
	}
}
