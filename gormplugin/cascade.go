package gormplugin

import (
	"strings"

	"gorm.io/gorm/schema"
)

// cascades returns the list and table tags of every table that references
// s's table with ON DELETE (or, for key updates, ON UPDATE) CASCADE, SET
// NULL or SET DEFAULT, through relationships of the models the plugin has
// seen, followed transitively.
func (p *Plugin) cascades(s *schema.Schema, keyUpdate bool) []string {
	var tags []string
	done := map[string]bool{tableName(s.Table): true}
	queue := []*schema.Schema{s}
	for len(queue) > 0 {
		target := queue[0]
		queue = queue[1:]
		p.schemas.Range(func(_, v any) bool {
			for _, rel := range v.(*schema.Schema).Relationships.Relations {
				constraint := rel.ParseConstraint()
				if constraint == nil || constraint.ReferenceSchema == nil || constraint.Schema == nil || tableName(constraint.ReferenceSchema.Table) != tableName(target.Table) {
					continue
				}
				action := constraint.OnDelete
				if keyUpdate {
					action = constraint.OnUpdate
				}
				switch strings.ToUpper(strings.TrimSpace(action)) {
				case "CASCADE", "SET NULL", "SET DEFAULT":
				default:
					continue
				}
				t := tableName(constraint.Schema.Table)
				if done[t] {
					continue
				}
				done[t] = true
				tags = append(tags, ListTag(t), TableTag(t))
				queue = append(queue, constraint.Schema)
			}
			return true
		})
	}
	return tags
}
