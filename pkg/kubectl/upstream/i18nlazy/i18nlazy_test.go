package i18nlazy

import "testing"

func TestEnglish(t *testing.T) {
	for _, tc := range []struct {
		all, messages, lang string
		want                bool
	}{
		{"", "", "", true},
		{"", "", "C", true},
		{"", "", "C.UTF-8", true},
		{"", "", "en_US.UTF-8", true},
		{"", "", "fr_FR.UTF-8", false},
		{"", "", "fr_FR", true}, // kubectl's rule: no dot, the default
		{"de_DE.UTF-8", "", "en_US.UTF-8", false},
		{"", "ja_JP.UTF-8", "en_US.UTF-8", false},
		{"C.UTF-8", "", "fr_FR.UTF-8", true},
	} {
		t.Setenv("LC_ALL", tc.all)
		t.Setenv("LC_MESSAGES", tc.messages)
		t.Setenv("LANG", tc.lang)
		if got := English(); got != tc.want {
			t.Errorf("LC_ALL=%q LC_MESSAGES=%q LANG=%q: English() = %v", tc.all, tc.messages, tc.lang, got)
		}
	}
}
