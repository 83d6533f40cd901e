class OrchestraClient {
  private ws: WebSocket;
  
  constructor(token: string) {
    this.ws = new WebSocket(`ws://localhost:8080/ws/observe?token=${token}`);
    
    this.ws.onopen = () => {
      console.log('Connected to Orchestra daemon');
      
      // Subscribe to terminal
      this.send({
        type: 'subscribe_terminal',
        session_id: 'sess-claude-primary'
      });
    };
    
    this.ws.onmessage = (event) => {
      const data = JSON.parse(event.data);
      this.handleMessage(data);
    };
  }
  
  send(data: object) {
    this.ws.send(JSON.stringify(data));
  }
  
  private handleMessage(data: any) {
    switch (data.type) {
      case 'terminal_output':
        console.log(`[${data.session_id}] ${data.data}`);
        break;
      case 'claude_response':
        console.log(`Claude: ${data.content}`);
        break;
      case 'error':
        console.error(`Error: ${data.message}`);
        break;
    }
  }
}

// Usage
const client = new OrchestraClient('your_jwt_token_here');
