import ArgumentParser
import Foundation

// A hand-written entry point rather than `@main`: usage errors exit 2 (not
// ArgumentParser's 64) and every error reads "sluice: error: …".
await SluiceCommand.runAsMain()
