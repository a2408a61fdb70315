package namelist

import (
	"fmt"
	"strings"
	"testing"
)

func TestShort(t *testing.T) {
	many := make([]string, 1000)
	for i := range many {
		many[i] = fmt.Sprintf("group/agents:agent-%04d", i)
	}
	for _, tc := range []struct {
		names []string
		shown int
		want  string
	}{
		{nil, 0, "(none)"},
		{[]string{"a"}, 0, "a"},
		{[]string{"a", "b", "c", "d", "e", "f"}, 0, "a, b, c, d, e, f"},
		{[]string{"a", "b", "c", "d", "e", "f", "g"}, 0, "a, b, c, d, e and 2 more"},
		{[]string{"a", "b", "c", "d"}, 2, "a, b and 2 more"},
		{many, 0, "group/agents:agent-0000, group/agents:agent-0001, group/agents:agent-0002, group/agents:agent-0003, group/agents:agent-0004 and 995 more"},
	} {
		if got := Short(tc.names, tc.shown); got != tc.want {
			t.Errorf("Short(%d names, %d) = %q, want %q", len(tc.names), tc.shown, got, tc.want)
		}
	}
	if got := Short(many, 0); len(got) > 200 || strings.Contains(got, "agent-0999") {
		t.Errorf("1000 names: %d characters", len(got))
	}
}
