package wire

import (
	"strconv"

	"github.com/walletsync/walletsync"
)

// AppendEvent appends the canonical JSON form of e (SPEC §1): known fields
// only, times in the output form, absent optional fields left out. Parsing
// the result gives e back.
func AppendEvent(dst []byte, e *walletsync.Event) []byte {
	dst = append(dst, `{"eventId":`...)
	dst = AppendJSONString(dst, e.ID)
	dst = append(dst, `,"type":"`...)
	dst = append(dst, e.Type.String()...)
	if e.Platform != 0 {
		dst = append(dst, `","platform":"`...)
		dst = append(dst, e.Platform.String()...)
	}
	dst = append(dst, `","customerId":`...)
	dst = AppendJSONString(dst, e.CustomerID)
	if e.PassID != "" {
		dst = append(dst, `,"passId":`...)
		dst = AppendJSONString(dst, e.PassID)
	}
	if e.PassType != "" {
		dst = append(dst, `,"passType":`...)
		dst = AppendJSONString(dst, e.PassType)
	}
	dst = append(dst, `,"occurredAt":"`...)
	dst = AppendTime(dst, e.OccurredAt)
	dst = append(dst, '"')
	if e.Type == walletsync.TypeObserved {
		dst = append(dst, `,"installed":`...)
		dst = strconv.AppendBool(dst, e.Installed)
		if e.InstalledAt != 0 {
			dst = append(dst, `,"installedAt":"`...)
			dst = AppendTime(dst, e.InstalledAt)
			dst = append(dst, '"')
		}
	}
	if e.Source != "" {
		dst = append(dst, `,"source":`...)
		dst = AppendJSONString(dst, e.Source)
	}
	if r := e.Registration; r != nil {
		dst = append(dst, `,"registration":{`...)
		n := len(dst)
		field := func(name string) {
			if len(dst) > n {
				dst = append(dst, ',')
			}
			dst = append(dst, '"')
			dst = append(dst, name...)
			dst = append(dst, `":`...)
		}
		if r.Medium != "" {
			field("medium")
			dst = AppendJSONString(dst, r.Medium)
		}
		if r.Origin != "" {
			field("origin")
			dst = AppendJSONString(dst, r.Origin)
		}
		if r.UserAgent != "" {
			field("userAgent")
			dst = AppendJSONString(dst, r.UserAgent)
		}
		if r.Tags != nil {
			field("tags")
			dst = append(dst, '[')
			for i, t := range r.Tags {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = AppendJSONString(dst, t)
			}
			dst = append(dst, ']')
		}
		if r.HasActiveCount {
			field("activeCount")
			dst = strconv.AppendInt(dst, r.ActiveCount, 10)
		}
		if r.HasTotalCount {
			field("totalCount")
			dst = strconv.AppendInt(dst, r.TotalCount, 10)
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string. Non-ASCII text is written as
// UTF-8, not escaped, so output stays readable (customer ids are often
// names and e-mail addresses); s must be valid UTF-8, which every decoded
// field is.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
