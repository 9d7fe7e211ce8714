package gormplugin

import (
	"maps"
	"slices"
	"strings"

	"gorm.io/gorm/schema"
)

// The database changes rows by itself through foreign keys: deleting a row
// deletes (CASCADE) or rewrites (SET NULL, SET DEFAULT) the rows that
// reference it, and updating a referenced column — the primary key, or any
// column a relationship names with references:Refer — rewrites the
// referencing rows' foreign keys (ON UPDATE …), which may in turn be
// referenced further. The plugin follows these through the relationships
// of the models it has seen, declared on either side, and invalidates the
// list and table tags of every table reached.

// columnSet is a set of column names; nil stands for every column (an
// update whose assignments the plugin cannot read).
type columnSet map[string]bool

func (c columnSet) hasAny(fields []*schema.Field) bool {
	if c == nil {
		return true
	}
	for _, f := range fields {
		if c[f.DBName] {
			return true
		}
	}
	return false
}

// cascadeStep is a change the database makes to a table: rows deleted, or
// the given columns of rows rewritten.
type cascadeStep struct {
	schema  *schema.Schema
	deleted bool
	columns columnSet
}

// deleteCascades returns the tags of the tables a delete from s's table
// changes through foreign keys.
func (p *Plugin) deleteCascades(s *schema.Schema) []string {
	return p.followCascades(cascadeStep{schema: s, deleted: true})
}

// updateCascades returns the tags of the tables an update of columns of
// s's table changes through foreign keys.
func (p *Plugin) updateCascades(s *schema.Schema, columns columnSet) []string {
	return p.followCascades(cascadeStep{schema: s, columns: columns})
}

func (p *Plugin) followCascades(first cascadeStep) []string {
	var tags []string
	reached := map[string]bool{}
	done := map[string]bool{} // steps already followed, by table and kind
	queue := []cascadeStep{first}
	for len(queue) > 0 {
		step := queue[0]
		queue = queue[1:]
		target := tableName(step.schema.Table)
		p.schemas.Range(func(k, _ any) bool {
			for _, rel := range k.(*schema.Schema).Relationships.Relations {
				constraint := rel.ParseConstraint()
				if constraint == nil || constraint.ReferenceSchema == nil || constraint.Schema == nil ||
					tableName(constraint.ReferenceSchema.Table) != target {
					continue
				}
				action := constraint.OnUpdate
				if step.deleted {
					action = constraint.OnDelete
				} else if !step.columns.hasAny(constraint.References) {
					continue // the referenced columns did not change
				}
				next := cascadeStep{schema: constraint.Schema}
				switch strings.ToUpper(strings.TrimSpace(action)) {
				case "CASCADE":
					next.deleted = step.deleted
				case "SET NULL", "SET DEFAULT":
				default:
					continue
				}
				if !next.deleted {
					next.columns = columnSet{}
					for _, f := range constraint.ForeignKeys {
						next.columns[f.DBName] = true
					}
				}
				table := tableName(constraint.Schema.Table)
				// The written table itself too, when it references itself
				// (a tree): rows other than those written changed.
				if !reached[table] {
					reached[table] = true
					tags = append(tags, ListTag(table), TableTag(table))
				}
				key := table + "\x00" + stepKind(next)
				if !done[key] {
					done[key] = true
					queue = append(queue, next)
				}
			}
			return true
		})
	}
	return tags
}

func stepKind(s cascadeStep) string {
	if s.deleted {
		return "delete"
	}
	return "update:" + strings.Join(slices.Sorted(maps.Keys(s.columns)), ",")
}
