package holder

import (
	"bytes"
	"io"
)

func lastParen(b []byte) int { return bytes.LastIndexByte(b, ')') }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
