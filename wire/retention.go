package wire

import (
	"errors"
	"strconv"
	"strings"

	"github.com/walletsync/walletsync"
)

// AppendRetentionChanges encodes changes as text for a record header:
// "installAt,initial,d1,d7,d30" per change, joined by ";" (installAt in Unix
// milliseconds, initial 0 or 1, each d -1, 0 or 1).
func AppendRetentionChanges(dst []byte, changes []walletsync.RetentionChange) []byte {
	for i, c := range changes {
		if i > 0 {
			dst = append(dst, ';')
		}
		dst = strconv.AppendInt(dst, c.InstallAt, 10)
		initial := byte('0')
		if c.Initial {
			initial = '1'
		}
		dst = append(dst, ',', initial)
		for _, d := range c.Delta {
			dst = append(dst, ',')
			dst = strconv.AppendInt(dst, int64(d), 10)
		}
	}
	return dst
}

// ParseRetentionChanges reads what AppendRetentionChanges wrote.
func ParseRetentionChanges(b []byte) ([]walletsync.RetentionChange, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var out []walletsync.RetentionChange
	for entry := range strings.SplitSeq(string(b), ";") {
		f := strings.Split(entry, ",")
		if len(f) != 5 {
			return nil, errors.New("retention changes: want installAt,initial,d1,d7,d30")
		}
		at, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, errors.New("retention changes: bad installAt")
		}
		c := walletsync.RetentionChange{InstallAt: at}
		switch f[1] {
		case "0":
		case "1":
			c.Initial = true
		default:
			return nil, errors.New("retention changes: bad initial flag")
		}
		for k := range c.Delta {
			switch f[2+k] {
			case "-1":
				c.Delta[k] = -1
			case "0":
			case "1":
				c.Delta[k] = 1
			default:
				return nil, errors.New("retention changes: bad delta")
			}
		}
		out = append(out, c)
	}
	return out, nil
}
