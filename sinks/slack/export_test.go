package slack

// SocketWarnEvery is socketWarnEvery, for the tests.
const SocketWarnEvery = socketWarnEvery
