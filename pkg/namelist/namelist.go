// Package namelist writes lists of names into one-line messages. A message
// that lists everything (1000 kubeconfig contexts, 1000 dotenv keys) becomes
// a line nobody reads and some log viewers cut; a message that lists nothing
// leaves the user guessing. So: the first few, then how many more.
package namelist

import (
	"fmt"
	"strings"
)

// DefaultShown is how many names Short shows: enough to recognise a pattern
// (GitLab agent contexts all look alike), few enough for one line.
const DefaultShown = 5

// Short joins names with ", ", showing at most shown of them (DefaultShown
// when shown <= 0), followed by " and N more" for the rest. An empty list is
// "(none)". Names are shown in the order given: sort them first for a stable
// message.
func Short(names []string, shown int) string {
	if shown <= 0 {
		shown = DefaultShown
	}
	switch {
	case len(names) == 0:
		return "(none)"
	case len(names) <= shown+1:
		// "and 1 more" is longer than the name it hides.
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:shown], ", "), len(names)-shown)
}
