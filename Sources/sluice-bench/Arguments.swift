import ArgumentParser
import SluiceEngine

extension MatmulPrecision: ExpressibleByArgument {}
