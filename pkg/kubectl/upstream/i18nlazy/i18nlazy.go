// Package i18nlazy keeps kubectl's command code from loading its message
// translations when they would change nothing: for English (the default,
// C, POSIX, en_US), kubectl's catalogue maps every message to itself.
//
// kubectl's packages translate their help texts in package initialisers,
// so linking them made every start of ferry's engine (every kubectl call of
// a job, apply included) unpack and parse the catalogue: 4.4 MB and 14,000
// allocations, most of what linking kubectl added to a start. Other
// languages still get kubectl's translations.
//
// It must initialise after k8s.io/kubectl/pkg/util/i18n and before the
// packages that call i18n.T. Go initialises packages in import path order
// among those whose dependencies are done, and this one depends on i18n
// alone and sorts before every k8s.io package, so it runs right after i18n.
package i18nlazy

import (
	"os"
	"strings"

	"k8s.io/kubectl/pkg/util/i18n"
)

func init() {
	// An error means translations were loaded already: nothing to save.
	_ = i18n.SetLoadTranslationsFunc(func() error {
		if English() {
			return nil
		}
		return i18n.LoadTranslations("kubectl", nil)
	})
}

// translated are kubectl's catalogues other than English.
var translated = map[string]bool{"de_DE": true, "fr_FR": true, "it_IT": true, "ja_JP": true,
	"ko_KR": true, "pt_BR": true, "zh_CN": true, "zh_TW": true}

// English reports whether kubectl would pick an English catalogue, with
// kubectl's own rules: LC_ALL, else LC_MESSAGES, else LANG; a value
// without exactly one dot ("C", "fr_FR") is the default, English.
func English() bool {
	lang := os.Getenv("LC_ALL")
	if lang == "" {
		lang = os.Getenv("LC_MESSAGES")
	}
	if lang == "" {
		lang = os.Getenv("LANG")
	}
	pieces := strings.Split(lang, ".")
	return len(pieces) != 2 || !translated[pieces[0]]
}
