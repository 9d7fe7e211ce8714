// Package taglist formats lists of tags for errors and logs, bounded: an
// invalidation may carry tens of thousands of tags, and an error quoting
// them all runs to megabytes.
package taglist

import (
	"fmt"
	"strings"
)

// Shown is how many tags Quote names before it counts the rest.
const Shown = 10

// Quote returns tags as %q formats a slice, with at most Shown of them
// named and the number of the others after them.
func Quote(tags []string) string {
	if len(tags) <= Shown {
		return fmt.Sprintf("%q", tags)
	}
	var b strings.Builder
	b.WriteByte('[')
	for i, t := range tags[:Shown] {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%q", t)
	}
	fmt.Fprintf(&b, " … and %d more]", len(tags)-Shown)
	return b.String()
}
