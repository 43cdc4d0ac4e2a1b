package processors

import (
	"context"
	"log/slog"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
)

// LoadAll rebuilds every partition at once, as a member given all of them
// after a restart does; for the recovery benchmark.
func LoadAll(ctx context.Context, brokers []string, adm *kadm.Client, t kafka.Topics, parts int32) ([]any, int) {
	states := make([]any, parts)
	counts := make([]int, parts)
	var wg sync.WaitGroup
	for p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, ls, err := load(ctx, slog.New(slog.DiscardHandler), func(string) {}, brokers, adm, t, p, walletsync.DefaultDedupeWindow, false)
			if err != nil {
				panic(err)
			}
			states[p], counts[p] = st, ls.customers
		}()
	}
	wg.Wait()
	total := 0
	for _, n := range counts {
		total += n
	}
	return states, total
}
