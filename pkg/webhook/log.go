package webhook

import (
	"fmt"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

var logLevels = map[string]zapcore.Level{"debug": zapcore.DebugLevel, "info": zapcore.InfoLevel, "error": zapcore.ErrorLevel}

// NewLogger returns a JSON logger through zap and zapr. Level debug also
// shows logr's V(1) messages.
func NewLogger(level string) (logr.Logger, error) {
	lvl, ok := logLevels[level]
	if !ok {
		return logr.Discard(), fmt.Errorf("logLevel %q: must be debug, info or error", level)
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Sampling = nil // every denial is worth a line
	zc.EncoderConfig.TimeKey = "ts"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	z, err := zc.Build()
	if err != nil {
		return logr.Discard(), fmt.Errorf("build logger: %w", err)
	}
	return zapr.NewLogger(z), nil
}
